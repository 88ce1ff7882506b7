package filter

import (
	"encoding/binary"
	"net/netip"
)

// packet is what the filter reads from an IP header. Addresses are 16
// bytes, IPv4 as IPv4-mapped IPv6, so one key type serves both families.
type packet struct {
	src, dst [16]byte
	v6       bool
	proto    uint8
	sport    uint16 // TCP/UDP source port; ICMP echo identifier
	dport    uint16 // TCP/UDP destination port
	hasPorts bool   // TCP/UDP header present (not a later fragment)
	fragment bool   // non-first fragment
	icmpType uint8
	tcpFlags uint8
	l4       []byte // transport header and payload
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

func (p *packet) srcAddr() netip.Addr {
	if p.v6 {
		return netip.AddrFrom16(p.src)
	}
	return netip.AddrFrom4([4]byte(p.src[12:16]))
}

func (p *packet) dstAddr() netip.Addr {
	if p.v6 {
		return netip.AddrFrom16(p.dst)
	}
	return netip.AddrFrom4([4]byte(p.dst[12:16]))
}

func set4(dst *[16]byte, b []byte) {
	*dst = [16]byte{10: 0xff, 11: 0xff}
	copy(dst[12:], b[:4])
}

// parse reads b's headers into p. It accepts a truncated packet as long as
// the headers it needs are there (ICMP errors quote only the first bytes).
func parse(b []byte, p *packet) bool {
	*p = packet{}
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || ihl > len(b) {
			return false
		}
		p.proto = b[9]
		set4(&p.src, b[12:16])
		set4(&p.dst, b[16:20])
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			p.fragment = true
			return true
		}
		p.l4 = b[ihl:]
	case len(b) >= 40 && b[0]>>4 == 6:
		p.v6 = true
		p.src = [16]byte(b[8:24])
		p.dst = [16]byte(b[24:40])
		next, rest := b[6], b[40:]
	ext:
		for range 8 { // extension headers
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 {
					return false
				}
				n := 8 + int(rest[1])*8
				if n > len(rest) {
					return false
				}
				next, rest = rest[0], rest[n:]
				continue
			case 44: // fragment
				if len(rest) < 8 {
					return false
				}
				if binary.BigEndian.Uint16(rest[2:4])&0xfff8 != 0 {
					p.proto = rest[0]
					p.fragment = true
					return true
				}
				next, rest = rest[0], rest[8:]
				continue
			}
			break ext
		}
		p.proto = next
		p.l4 = rest
	default:
		return false
	}
	switch p.proto {
	case ProtoTCP, ProtoUDP:
		if len(p.l4) < 4 {
			return false
		}
		p.sport = binary.BigEndian.Uint16(p.l4[0:2])
		p.dport = binary.BigEndian.Uint16(p.l4[2:4])
		p.hasPorts = true
		if p.proto == ProtoTCP && len(p.l4) >= 14 {
			p.tcpFlags = p.l4[13]
		}
	case ProtoICMP, ProtoICMPv6:
		if len(p.l4) < 8 {
			return false
		}
		p.icmpType = p.l4[0]
		p.sport = binary.BigEndian.Uint16(p.l4[4:6]) // echo identifier
	}
	return true
}

// ICMP message classes.
func isEchoRequest(proto, typ uint8) bool {
	return proto == ProtoICMP && typ == 8 || proto == ProtoICMPv6 && typ == 128
}

func isEchoReply(proto, typ uint8) bool {
	return proto == ProtoICMP && typ == 0 || proto == ProtoICMPv6 && typ == 129
}

func isICMPError(proto, typ uint8) bool {
	if proto == ProtoICMP {
		return typ == 3 || typ == 11 || typ == 12
	}
	return proto == ProtoICMPv6 && typ >= 1 && typ <= 4
}
