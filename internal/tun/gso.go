package tun

import "encoding/binary"

// gsoSplit turns pkt, one packet read from a TUN queue behind the virtio-net
// header hdr, into the packets it stands for. They are written to
// bufs[i][offset:] and their lengths to sizes[i]; it returns how many.
//
// A packet that is not a super-packet (GSO NONE) is copied to
// bufs[0][offset:], its checksum completed first if it is only partial
// (NEEDS_CSUM). A TCP (TSO) or UDP (USO) super-packet is cut after its
// headers into segments of hdr.gsoSize payload bytes, each a complete packet
// with its own IP length, IPv4 ID and header checksum, TCP sequence number
// and flags (FIN and PSH only on the last segment, CWR only on the first) or
// UDP length, and a full transport checksum. hdr.hdrLen is not trusted (the
// kernel reports the length of the linear part of its buffer there): the
// headers are measured from the packet itself.
//
// A super-packet of more segments than len(bufs) yields ErrTooManySegments,
// one that is malformed or does not fit its buffers ErrBadOffload; nothing is
// returned for it. gsoSplit does not allocate.
func gsoSplit(pkt []byte, hdr virtioNetHdr, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, ErrTooManySegments
	}
	if offset < 0 {
		return 0, ErrBadOffload
	}
	gsoType := hdr.gsoType &^ vnetGSOECN
	if gsoType == vnetGSONone {
		if offset > len(bufs[0]) || len(pkt) > len(bufs[0])-offset {
			return 0, ErrBadOffload
		}
		out := bufs[0][offset : offset+len(pkt)]
		copy(out, pkt)
		if hdr.flags&vnetFlagNeedsCsum != 0 {
			if !completeChecksum(out, int(hdr.csumStart), int(hdr.csumOffset)) {
				return 0, ErrBadOffload
			}
		}
		sizes[0] = len(pkt)
		return 1, nil
	}

	var proto uint8
	switch gsoType {
	case vnetGSOTCPv4, vnetGSOTCPv6:
		proto = ipProtoTCP
	case vnetGSOUDPL4:
		proto = ipProtoUDP
	default:
		return 0, ErrBadOffload
	}
	if len(pkt) == 0 {
		return 0, ErrBadOffload
	}
	var ipLen int
	var src, dst []byte
	v4 := pkt[0]>>4 == 4
	switch {
	case v4 && gsoType != vnetGSOTCPv6:
		if len(pkt) < ipv4HeaderLen {
			return 0, ErrBadOffload
		}
		ipLen = int(pkt[0]&0xf) * 4
		if ipLen < ipv4HeaderLen || len(pkt) < ipLen || pkt[9] != proto ||
			pkt[6]&ipv4FlagMF != 0 || binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 {
			return 0, ErrBadOffload
		}
		src, dst = pkt[12:16], pkt[16:20]
	case pkt[0]>>4 == 6 && gsoType != vnetGSOTCPv4:
		// Extension headers are not supported: the kernel does not put
		// any in front of a TCP or UDP super-packet it sends a TUN.
		if len(pkt) < ipv6HeaderLen || pkt[6] != proto {
			return 0, ErrBadOffload
		}
		ipLen = ipv6HeaderLen
		src, dst = pkt[8:24], pkt[24:40]
	default:
		return 0, ErrBadOffload
	}
	if hdr.flags&vnetFlagNeedsCsum != 0 && int(hdr.csumStart) != ipLen {
		return 0, ErrBadOffload
	}
	l4Len := udpHeaderLen
	csumOff := udpCsumOffset
	if proto == ipProtoTCP {
		if len(pkt) < ipLen+tcpHeaderLen {
			return 0, ErrBadOffload
		}
		l4Len = int(pkt[ipLen+12]>>4) * 4
		csumOff = tcpCsumOffset
		if l4Len < tcpHeaderLen {
			return 0, ErrBadOffload
		}
	}
	hdrLen := ipLen + l4Len
	if len(pkt) < hdrLen {
		return 0, ErrBadOffload
	}
	gsoSize := int(hdr.gsoSize)
	if gsoSize == 0 {
		return 0, ErrBadOffload
	}
	payload := len(pkt) - hdrLen
	segs := (payload + gsoSize - 1) / gsoSize
	if segs == 0 {
		segs = 1
	}
	if segs > len(bufs) || segs > len(sizes) {
		return 0, ErrTooManySegments
	}

	id := binary.BigEndian.Uint16(pkt[4:]) // IPv4 only
	var seq uint32
	var flags uint8
	if proto == ipProtoTCP {
		seq = binary.BigEndian.Uint32(pkt[ipLen+4:])
		flags = pkt[ipLen+13]
	}
	addrSum := csumAdd16(checksumAdd(dst, checksumAdd(src, 0)), uint16(proto))
	// Each segment's headers are made in hb (on the stack) and its
	// checksums computed there and over the payload where it lies in pkt,
	// which the kernel has just written (warm in cache): the segment
	// buffers are then only written to, never read back while their cache
	// lines may still be in flight.
	var hb [maxSegHeaderLen]byte
	if hdrLen > len(hb) {
		return 0, ErrBadOffload
	}
	h := hb[:hdrLen]
	copy(h, pkt[:hdrLen])
	l4 := h[ipLen:]
	l4[csumOff], l4[csumOff+1] = 0, 0
	for i := 0; i < segs; i++ {
		start := hdrLen + i*gsoSize
		end := min(start+gsoSize, len(pkt))
		segLen := hdrLen + end - start
		if offset > len(bufs[i]) || segLen > len(bufs[i])-offset {
			return 0, ErrBadOffload
		}
		segmentIPHeader(h, v4, ipLen, segLen, id, i)
		l4Total := segLen - ipLen
		if proto == ipProtoTCP {
			binary.BigEndian.PutUint32(l4[4:], seq+uint32(i*gsoSize))
			l4[13] = segmentTCPFlags(flags, i, segs)
		} else {
			binary.BigEndian.PutUint16(l4[4:], uint16(l4Total))
		}
		l4[csumOff], l4[csumOff+1] = 0, 0
		// The transport header's length is even (a multiple of 4), so
		// the sum may continue over the payload.
		sum := checksumAdd(l4, csumAdd16(addrSum, uint16(l4Total)))
		c := ^checksumAdd(pkt[start:end], sum)
		if c == 0 && proto == ipProtoUDP {
			c = 0xffff // a zero UDP checksum means none
		}
		binary.BigEndian.PutUint16(l4[csumOff:], c)
		seg := bufs[i][offset : offset+segLen]
		copy(seg, h)
		copy(seg[hdrLen:], pkt[start:end])
		sizes[i] = segLen
	}
	return segs, nil
}

// completeChecksum finishes a partial checksum the way the kernel would have
// done it before sending: the field at start+off holds the sum of the
// pseudo-header; the one's complement of the sum from start to the end of
// pkt goes there. It reports false if the range is outside pkt.
func completeChecksum(pkt []byte, start, off int) bool {
	if start+off+2 > len(pkt) {
		return false
	}
	c := ^checksumAdd(pkt[start:], 0)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[start+off:], c)
	return true
}

// segmentIPHeader sets the IP header h (ipLen long) for segment i of a
// split super-packet, segLen bytes in all: the lengths, and for IPv4 the
// ID (the super-packet's id plus i) and the header checksum.
func segmentIPHeader(h []byte, v4 bool, ipLen, segLen int, id uint16, i int) {
	if v4 {
		binary.BigEndian.PutUint16(h[2:], uint16(segLen))
		binary.BigEndian.PutUint16(h[4:], id+uint16(i))
		ipv4HeaderChecksum(h[:ipLen])
	} else {
		binary.BigEndian.PutUint16(h[4:], uint16(segLen-ipv6HeaderLen))
	}
}

// segmentTCPFlags are the TCP flags of segment i of segs: FIN and PSH
// only on the last, CWR only on the first.
func segmentTCPFlags(flags byte, i, segs int) byte {
	if i != segs-1 {
		flags &^= tcpFlagFIN | tcpFlagPSH
	}
	if i != 0 {
		flags &^= tcpFlagCWR
	}
	return flags
}
