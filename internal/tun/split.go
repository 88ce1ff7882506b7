package tun

// GSOTCP names the kind of TCP super-packet SplitTCP cuts.
type GSOTCP uint8

const (
	GSOTCPv4 GSOTCP = vnetGSOTCPv4
	GSOTCPv6 GSOTCP = vnetGSOTCPv6
)

// SplitTCP is the splitting the offloading TUN does on Read (gsoSplit), for
// other devices that hand the engine TCP super-packets (the userspace
// netstack): pkt, a TCP packet whose checksum holds only the pseudo-header
// sum (partial, as the kernel and netstack leave it), is cut into segments
// of at most mss payload bytes, each a complete packet with its own headers
// and full checksums, written to bufs[i][offset:] with their lengths in
// sizes[i]. A packet of no more than mss payload bytes becomes one packet
// with its checksum completed. It returns how many packets it wrote, or
// ErrTooManySegments / ErrBadOffload; it does not allocate.
func SplitTCP(pkt []byte, kind GSOTCP, mss int, bufs [][]byte, sizes []int, offset int) (int, error) {
	if mss <= 0 || mss > 65535 || len(pkt) == 0 {
		return 0, ErrBadOffload
	}
	ipLen := ipv6HeaderLen
	if kind == GSOTCPv4 {
		ipLen = int(pkt[0]&0xf) * 4
	}
	hdr := virtioNetHdr{flags: vnetFlagNeedsCsum, gsoType: uint8(kind), gsoSize: uint16(mss),
		csumStart: uint16(ipLen), csumOffset: tcpCsumOffset}
	return gsoSplit(pkt, hdr, bufs, sizes, offset)
}
