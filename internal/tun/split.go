package tun

import "encoding/binary"

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

// SplitTCPVec is SplitTCP for a super-packet that lies in pieces (vec, in
// order), such as the views of a netstack packet buffer: each segment's
// payload is copied once, from the pieces straight into its buffer, where
// its checksum is then computed, instead of flattening the packet first.
// The segments are the same as SplitTCP's of the pieces joined.
func SplitTCPVec(vec [][]byte, kind GSOTCP, mss int, bufs [][]byte, sizes []int, offset int) (int, error) {
	total := 0
	for _, v := range vec {
		total += len(v)
	}
	if mss <= 0 || mss > 65535 || total == 0 || offset < 0 {
		return 0, ErrBadOffload
	}
	// The headers (and perhaps some payload), gathered.
	var hb [maxSegHeaderLen]byte
	pkt := hb[:min(len(hb), total)]
	for i, k := 0, 0; k < len(pkt); i++ {
		k += copy(pkt[k:], vec[i])
	}
	var ipLen int
	var src, dst []byte
	v4 := kind == GSOTCPv4
	switch {
	case v4 && pkt[0]>>4 == 4:
		ipLen = int(pkt[0]&0xf) * 4
		if len(pkt) < ipv4HeaderLen || ipLen < ipv4HeaderLen || len(pkt) < ipLen+tcpHeaderLen || pkt[9] != ipProtoTCP ||
			pkt[6]&ipv4FlagMF != 0 || binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 {
			return 0, ErrBadOffload
		}
		src, dst = pkt[12:16], pkt[16:20]
	case kind == GSOTCPv6 && pkt[0]>>4 == 6:
		if len(pkt) < ipv6HeaderLen+tcpHeaderLen || pkt[6] != ipProtoTCP {
			return 0, ErrBadOffload
		}
		ipLen = ipv6HeaderLen
		src, dst = pkt[8:24], pkt[24:40]
	default:
		return 0, ErrBadOffload
	}
	l4Len := int(pkt[ipLen+12]>>4) * 4
	hdrLen := ipLen + l4Len
	if l4Len < tcpHeaderLen || hdrLen > len(pkt) {
		return 0, ErrBadOffload
	}
	payload := total - hdrLen
	segs := max(1, (payload+mss-1)/mss)
	if segs > len(bufs) || segs > len(sizes) {
		return 0, ErrTooManySegments
	}
	id := binary.BigEndian.Uint16(pkt[4:]) // IPv4 only
	seq := binary.BigEndian.Uint32(pkt[ipLen+4:])
	flags := pkt[ipLen+13]
	addrSum := csumAdd16(checksumAdd(dst, checksumAdd(src, 0)), uint16(ipProtoTCP))
	h := pkt[:hdrLen]
	l4 := h[ipLen:]
	// vi, vo: where the next payload byte is in vec.
	vi, vo := 0, hdrLen
	for vi < len(vec) && vo >= len(vec[vi]) {
		vo -= len(vec[vi])
		vi++
	}
	for i := 0; i < segs; i++ {
		plen := min(mss, payload-i*mss)
		segLen := hdrLen + plen
		if offset > len(bufs[i]) || segLen > len(bufs[i])-offset {
			return 0, ErrBadOffload
		}
		seg := bufs[i][offset : offset+segLen]
		p := seg[hdrLen:]
		for k := 0; k < plen; {
			c := copy(p[k:], vec[vi][vo:])
			k, vo = k+c, vo+c
			for vi < len(vec) && vo >= len(vec[vi]) {
				vo -= len(vec[vi])
				vi++
			}
		}
		segmentIPHeader(h, v4, ipLen, segLen, id, i)
		binary.BigEndian.PutUint32(l4[4:], seq+uint32(i*mss))
		l4[13] = segmentTCPFlags(flags, i, segs)
		l4[tcpCsumOffset], l4[tcpCsumOffset+1] = 0, 0
		// The TCP header's length is a multiple of 4: the sum goes on
		// over the payload, just written and still in cache.
		sum := checksumAdd(l4, csumAdd16(addrSum, uint16(segLen-ipLen)))
		binary.BigEndian.PutUint16(l4[tcpCsumOffset:], ^checksumAdd(p, sum))
		copy(seg, h)
		sizes[i] = segLen
	}
	return segs, nil
}
