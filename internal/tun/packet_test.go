package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Minimal IPv4/IPv6 + UDP packet building and parsing for the tests.

func checksum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// udpPacket builds an IP packet (v4 or v6 after src's family) carrying a UDP
// datagram with correct checksums.
func udpPacket(src, dst netip.AddrPort, payload []byte) []byte {
	udpLen := 8 + len(payload)
	udp := make([]byte, udpLen)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	copy(udp[8:], payload)

	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	// Pseudo-header: addresses, protocol, UDP length.
	sum := checksum(0, s)
	sum = checksum(sum, d)
	sum += 17 + uint32(udpLen)
	sum = checksum(sum, udp)
	c := fold(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)

	if src.Addr().Is4() {
		ip := make([]byte, 20, 20+udpLen)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
		ip[8] = 64 // TTL
		ip[9] = 17 // UDP
		copy(ip[12:], s)
		copy(ip[16:], d)
		binary.BigEndian.PutUint16(ip[10:], fold(checksum(0, ip)))
		return append(ip, udp...)
	}
	ip := make([]byte, 40, 40+udpLen)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
	ip[6] = 17 // next header UDP
	ip[7] = 64 // hop limit
	copy(ip[8:], s)
	copy(ip[24:], d)
	return append(ip, udp...)
}

// parseUDP parses an IPv4 or IPv6 packet carrying UDP (no IPv6 extension
// headers), verifying the IPv4 header checksum.
func parseUDP(pkt []byte) (src, dst netip.AddrPort, payload []byte, err error) {
	if len(pkt) < 1 {
		return src, dst, nil, fmt.Errorf("empty packet")
	}
	var sa, da netip.Addr
	var udp []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, nil, fmt.Errorf("short IPv4 packet")
		}
		ihl := int(pkt[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < 20 || total > len(pkt) || total < ihl+8 {
			return src, dst, nil, fmt.Errorf("bad IPv4 lengths ihl=%d total=%d len=%d", ihl, total, len(pkt))
		}
		if fold(checksum(0, pkt[:ihl])) != 0 {
			return src, dst, nil, fmt.Errorf("bad IPv4 header checksum")
		}
		if pkt[9] != 17 {
			return src, dst, nil, fmt.Errorf("IPv4 protocol %d, not UDP", pkt[9])
		}
		sa = netip.AddrFrom4([4]byte(pkt[12:16]))
		da = netip.AddrFrom4([4]byte(pkt[16:20]))
		udp = pkt[ihl:total]
	case 6:
		if len(pkt) < 48 {
			return src, dst, nil, fmt.Errorf("short IPv6 packet")
		}
		if pkt[6] != 17 {
			return src, dst, nil, fmt.Errorf("IPv6 next header %d, not UDP", pkt[6])
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:]))
		if 40+plen > len(pkt) || plen < 8 {
			return src, dst, nil, fmt.Errorf("bad IPv6 payload length %d", plen)
		}
		sa = netip.AddrFrom16([16]byte(pkt[8:24]))
		da = netip.AddrFrom16([16]byte(pkt[24:40]))
		udp = pkt[40 : 40+plen]
	default:
		return src, dst, nil, fmt.Errorf("IP version %d", pkt[0]>>4)
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < 8 || ulen > len(udp) {
		return src, dst, nil, fmt.Errorf("bad UDP length %d", ulen)
	}
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(udp[0:]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(udp[2:]))
	return src, dst, udp[8:ulen], nil
}
