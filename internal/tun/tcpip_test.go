package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// TCP and UDP packet building and checking for the offload tests. Checksums
// are computed and verified with checksum and fold of packet_test.go, a
// plain 16-bit loop independent of checksumAdd.

// testPkt describes an IPv4 or IPv6 (after src's family) TCP or UDP packet.
type testPkt struct {
	udp      bool
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8 // TCP
	win      uint16
	opts     []byte // TCP options, a multiple of 4 bytes
	id       uint16 // IPv4
	noDF     bool   // IPv4: DF clear
	ttl      uint8  // 0 means 64
	tos      uint8  // IPv4 TOS, IPv6 traffic class
	flow     uint32 // IPv6 flow label
	payload  []byte
}

var (
	testSrc4 = netip.MustParseAddrPort("10.0.0.1:40000")
	testDst4 = netip.MustParseAddrPort("10.0.0.2:443")
	testSrc6 = netip.MustParseAddrPort("[fd00::1]:40000")
	testDst6 = netip.MustParseAddrPort("[fd00::2]:443")
)

// tsOpts returns TCP options of two NOPs and a timestamp.
func tsOpts(val, ecr uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], val)
	binary.BigEndian.PutUint32(o[8:], ecr)
	return o
}

// testPayload returns n bytes of a pattern starting at stream position pos.
func testPayload(pos, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((pos + i) * 7 >> 3)
	}
	return b
}

// pseudoSum is the unfolded sum of the pseudo-header.
func pseudoSum(src, dst []byte, proto uint8, length int) uint32 {
	return checksum(checksum(0, src), dst) + uint32(proto) + uint32(length)
}

func (s testPkt) build() []byte {
	var l4 []byte
	proto := uint8(ipProtoTCP)
	if s.udp {
		proto = ipProtoUDP
		l4 = make([]byte, udpHeaderLen, udpHeaderLen+len(s.payload))
		binary.BigEndian.PutUint16(l4[4:], uint16(udpHeaderLen+len(s.payload)))
	} else {
		l4 = make([]byte, tcpHeaderLen, tcpHeaderLen+len(s.opts)+len(s.payload))
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		binary.BigEndian.PutUint32(l4[8:], s.ack)
		l4[12] = byte((tcpHeaderLen+len(s.opts))/4) << 4
		l4[13] = s.flags
		binary.BigEndian.PutUint16(l4[14:], s.win)
		l4 = append(l4, s.opts...)
	}
	binary.BigEndian.PutUint16(l4[0:], s.src.Port())
	binary.BigEndian.PutUint16(l4[2:], s.dst.Port())
	l4 = append(l4, s.payload...)
	src, dst := s.src.Addr().AsSlice(), s.dst.Addr().AsSlice()
	c := fold(checksum(pseudoSum(src, dst, proto, len(l4)), l4))
	if s.udp {
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[udpCsumOffset:], c)
	} else {
		binary.BigEndian.PutUint16(l4[tcpCsumOffset:], c)
	}
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	if s.src.Addr().Is4() {
		ip := make([]byte, ipv4HeaderLen, ipv4HeaderLen+len(l4))
		ip[0] = 0x45
		ip[1] = s.tos
		binary.BigEndian.PutUint16(ip[2:], uint16(ipv4HeaderLen+len(l4)))
		binary.BigEndian.PutUint16(ip[4:], s.id)
		if !s.noDF {
			ip[6] = ipv4FlagDF
		}
		ip[8] = ttl
		ip[9] = proto
		copy(ip[12:], src)
		copy(ip[16:], dst)
		binary.BigEndian.PutUint16(ip[10:], fold(checksum(0, ip)))
		return append(ip, l4...)
	}
	ip := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(l4))
	binary.BigEndian.PutUint32(ip, 6<<28|uint32(s.tos)<<20|s.flow&0xfffff)
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	ip[6] = proto
	ip[7] = ttl
	copy(ip[8:], src)
	copy(ip[24:], dst)
	return append(ip, l4...)
}

// checkPacket verifies an IPv4 or IPv6 TCP or UDP packet: lengths, the IPv4
// header checksum and the transport checksum.
func checkPacket(pkt []byte) error {
	if len(pkt) < 1 {
		return fmt.Errorf("empty packet")
	}
	var l4, src, dst []byte
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return fmt.Errorf("short IPv4 packet")
		}
		ihl := int(pkt[0]&0xf) * 4
		if ihl < 20 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || len(pkt) < ihl {
			return fmt.Errorf("IPv4 header length %d, total length %d, packet %d bytes", ihl, binary.BigEndian.Uint16(pkt[2:]), len(pkt))
		}
		if fold(checksum(0, pkt[:ihl])) != 0 {
			return fmt.Errorf("bad IPv4 header checksum")
		}
		proto, src, dst, l4 = pkt[9], pkt[12:16], pkt[16:20], pkt[ihl:]
	case 6:
		if len(pkt) < 40 || 40+int(binary.BigEndian.Uint16(pkt[4:])) != len(pkt) {
			return fmt.Errorf("bad IPv6 payload length")
		}
		proto, src, dst, l4 = pkt[6], pkt[8:24], pkt[24:40], pkt[40:]
	default:
		return fmt.Errorf("IP version %d", pkt[0]>>4)
	}
	switch proto {
	case ipProtoTCP:
		if len(l4) < 20 || int(l4[12]>>4)*4 > len(l4) || l4[12]>>4 < 5 {
			return fmt.Errorf("bad TCP header")
		}
	case ipProtoUDP:
		if len(l4) < 8 || int(binary.BigEndian.Uint16(l4[4:])) != len(l4) {
			return fmt.Errorf("bad UDP length")
		}
		if binary.BigEndian.Uint16(l4[6:]) == 0 {
			return fmt.Errorf("no UDP checksum")
		}
	default:
		return fmt.Errorf("protocol %d", proto)
	}
	if fold(checksum(pseudoSum(src, dst, proto, len(l4)), l4)) != 0 {
		return fmt.Errorf("bad %d checksum", proto)
	}
	return nil
}

// withRoom copies pkt into a buffer behind offset bytes, with capacity
// capacity (at least the packet's).
func withRoom(pkt []byte, capacity int) []byte {
	b := make([]byte, offset+len(pkt), max(capacity, offset+len(pkt)))
	copy(b[offset:], pkt)
	return b
}

// makeBufs returns n buffers of 65535 bytes, as the engine reads into.
func makeBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	return bufs, make([]int, n)
}
