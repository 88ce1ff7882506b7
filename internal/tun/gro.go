package tun

import (
	"bytes"
	"encoding/binary"
)

// Generic receive offload for writes: the segments of a TCP (or UDP) flow in
// one batch are appended to the first of them, which is written as one
// super-packet that the kernel's stack takes in one go. Nothing is copied:
// the first packet's headers are rewritten for the whole and the payloads of
// the appended packets are gathered from their own buffers by one writev(2)
// (see segments).
//
// A packet is a candidate when it is IPv4 without options and not a
// fragment, with a valid header checksum, or IPv6 without extension headers,
// carrying TCP with ACK (and maybe PSH) and nothing else set, or UDP (when
// the kernel takes USO), with a non-empty payload and consistent lengths.
// Segment p is appended to the packet h grown so far when both are of the
// same flow, with
//   - the same addresses, ports and IP version, TTL/hop limit, TOS/traffic
//     class (and IPv6 flow label) and IPv4 flags; if DF is clear, p's IPv4 ID
//     following h's last one (the kernel re-creates IDs counting up when it
//     splits the packet again);
//   - TCP: the same ACK number, window, urgent pointer and options (byte
//     for byte), p's sequence number continuing h's data;
//   - a payload no larger than h's first one (the segment size); a smaller
//     one, or a PSH, ends h; UDP at most maxUDPSegments segments;
//   - room for it: h stays within maxPacketLen bytes.
//
// Any packet of a flow that is not appended ends that flow's packet so far,
// so the order of a flow's packets is kept. Payload checksums are not
// verified: the super-packet's transport checksum is left partial (NEEDS_CSUM)
// for the kernel, which trusts it as it trusts its own.

// maxUDPSegments bounds a UDP super-packet: the kernel refuses more than its
// UDP_MAX_SEGMENTS, 64 until it was raised to 128 (2024).
const maxUDPSegments = 64

type groKind uint8

const (
	groNone groKind = iota
	groTCP4
	groTCP6
	groUDP4
	groUDP6
)

func (k groKind) tcp() bool { return k == groTCP4 || k == groTCP6 }
func (k groKind) v4() bool  { return k == groTCP4 || k == groUDP4 }

// groPacket is what coalesce learns about one packet of the batch.
type groPacket struct {
	kind     groKind // groNone: the packet is not of any flow
	eligible bool    // it may be appended or grown
	ipLen    int
	l4Len    int
	payLen   int
	seq      uint32
	hash     uint64
}

// groOut is one packet to write: bufs[idx][offset-virtioNetHdrLen :
// offset+length], its virtio-net header in front.
type groOut struct {
	idx    int // index in the batch
	length int // packet length, grown by the segments appended
	segs   int // number of packets it is made of
	hdr    virtioNetHdr

	// Growing state.
	kind    groKind
	open    bool // more segments may be appended
	psh     bool // the last segment appended had PSH
	ipLen   int
	l4Len   int
	gsoSize int
	nextSeq uint32
	hash    uint64
	first   int // first appended packet (index in the batch), -1 if none
	last    int

	// What finalize changed, for unmerge.
	origLength int
	origCsum   uint16 // transport checksum
}

// coalescer holds coalesce's scratch space, reused from batch to batch.
type coalescer struct {
	outs   []groOut
	active []int // indices in outs of the packets still open, one per flow
	next   []int // next appended packet after bufs[i] in its chain, or -1
}

// coalesce plans the writing of a batch of packets bufs[i][offset:], with
// room for a virtio-net header in front of each (offset >=
// virtioNetHdrLen). TCP segments are merged if tcp, UDP datagrams if udp.
// Only the headers of the first packet of a merged group change (lengths,
// checksums, PSH, its virtio-net header); the appended packets' buffers are
// not changed and their payloads are written from where they are (see
// segments). The returned packets, in batch order, are ready to write with
// their headers; the slice is valid until the next call. Packets that are written alone are unchanged, behind a zero header.
// coalesce does not allocate once its scratch space has grown to the batch
// size.
func (c *coalescer) coalesce(bufs [][]byte, offset int, tcp, udp bool) []groOut {
	c.outs = c.outs[:0]
	c.active = c.active[:0]
	if cap(c.next) < len(bufs) {
		c.next = make([]int, len(bufs))
	}
	c.next = c.next[:len(bufs)]
	for i, b := range bufs {
		var pkt []byte
		if offset <= len(b) {
			pkt = b[offset:]
		}
		var p groPacket
		parseGRO(pkt, &p, tcp, udp)
		if p.kind != groNone {
			if a := c.lookup(bufs, offset, pkt, &p); a >= 0 {
				k := c.active[a]
				if c.appendSegment(bufs, offset, &c.outs[k], i, pkt, &p) {
					if !c.outs[k].open {
						c.closeActive(a)
					}
					continue
				}
				c.outs[k].open = false
				c.closeActive(a)
			}
		}
		c.outs = append(c.outs, groOut{idx: i, length: len(pkt), origLength: len(pkt), segs: 1, first: -1, last: -1})
		if p.eligible {
			o := &c.outs[len(c.outs)-1]
			o.kind, o.ipLen, o.l4Len, o.hash = p.kind, p.ipLen, p.l4Len, p.hash
			o.gsoSize = p.payLen
			o.nextSeq = p.seq + uint32(p.payLen)
			o.open = !(p.kind.tcp() && pkt[p.ipLen+13]&tcpFlagPSH != 0)
			if o.open {
				c.active = append(c.active, len(c.outs)-1)
			}
		}
	}
	for k := range c.outs {
		c.outs[k].finalize(bufs[c.outs[k].idx], offset)
	}
	return c.outs
}

// closeActive removes entry a of the active list.
func (c *coalescer) closeActive(a int) {
	last := len(c.active) - 1
	c.active[a] = c.active[last]
	c.active = c.active[:last]
}

// lookup returns the position in c.active of the open packet of p's flow
// (same version, protocol, addresses and ports), or -1.
func (c *coalescer) lookup(bufs [][]byte, offset int, pkt []byte, p *groPacket) int {
	for a := len(c.active) - 1; a >= 0; a-- {
		o := &c.outs[c.active[a]]
		if o.hash != p.hash || o.kind != p.kind {
			continue
		}
		h := bufs[o.idx][offset:]
		if p.kind.v4() {
			if !bytes.Equal(h[12:20], pkt[12:20]) {
				continue
			}
		} else if !bytes.Equal(h[8:40], pkt[8:40]) {
			continue
		}
		if binary.BigEndian.Uint32(h[o.ipLen:]) != binary.BigEndian.Uint32(pkt[p.ipLen:]) {
			continue // ports
		}
		return a
	}
	return -1
}

// appendSegment appends packet i (pkt, parsed as p) to o if it may be, and
// reports whether it was.
func (c *coalescer) appendSegment(bufs [][]byte, offset int, o *groOut, i int, pkt []byte, p *groPacket) bool {
	if !p.eligible || p.payLen > o.gsoSize || p.l4Len != o.l4Len {
		return false
	}
	h := bufs[o.idx][offset:]
	if o.kind.v4() {
		// TOS, flags (DF), TTL. The header lengths are equal (no options),
		// neither is a fragment.
		if h[1] != pkt[1] || h[6] != pkt[6] || h[8] != pkt[8] {
			return false
		}
		if h[6]&ipv4FlagDF == 0 && binary.BigEndian.Uint16(pkt[4:]) != binary.BigEndian.Uint16(h[4:])+uint16(o.segs) {
			return false
		}
	} else {
		// Version, traffic class, flow label; hop limit.
		if binary.BigEndian.Uint32(h) != binary.BigEndian.Uint32(pkt) || h[7] != pkt[7] {
			return false
		}
	}
	if o.kind.tcp() {
		ht, pt := h[o.ipLen:o.ipLen+o.l4Len], pkt[p.ipLen:p.ipLen+p.l4Len]
		if p.seq != o.nextSeq ||
			binary.BigEndian.Uint32(ht[8:]) != binary.BigEndian.Uint32(pt[8:]) || // ACK
			binary.BigEndian.Uint16(ht[14:]) != binary.BigEndian.Uint16(pt[14:]) || // window
			binary.BigEndian.Uint16(ht[18:]) != binary.BigEndian.Uint16(pt[18:]) || // urgent pointer
			!bytes.Equal(ht[tcpHeaderLen:], pt[tcpHeaderLen:]) { // options
			return false
		}
	} else if o.segs >= maxUDPSegments {
		return false
	}
	if o.length+p.payLen > maxPacketLen {
		return false
	}
	o.length += p.payLen
	o.segs++
	o.nextSeq += uint32(p.payLen)
	if o.kind.tcp() && pkt[p.ipLen+13]&tcpFlagPSH != 0 {
		o.psh = true
		o.open = false
	}
	if p.payLen < o.gsoSize {
		o.open = false
	}
	c.next[i] = -1
	if o.last < 0 {
		o.first = i
	} else {
		c.next[o.last] = i
	}
	o.last = i
	return true
}

// parseGRO fills p for pkt. kind is set for a TCP (if tcp) or UDP (if udp)
// packet whose addresses and ports can be read; eligible if it can also be
// merged.
func parseGRO(pkt []byte, p *groPacket, tcp, udp bool) {
	if len(pkt) < ipv4HeaderLen {
		return
	}
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		ipLen := int(pkt[0]&0xf) * 4
		if ipLen < ipv4HeaderLen || len(pkt) < ipLen ||
			pkt[6]&ipv4FlagMF != 0 || binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 {
			return
		}
		proto = pkt[9]
		p.ipLen = ipLen
		p.hash = uint64(binary.BigEndian.Uint32(pkt[12:]))<<32 | uint64(binary.BigEndian.Uint32(pkt[16:]))
		p.eligible = ipLen == ipv4HeaderLen &&
			int(binary.BigEndian.Uint16(pkt[2:])) == len(pkt) &&
			ipv4HeaderValid(pkt[:ipv4HeaderLen])
	case 6:
		if len(pkt) < ipv6HeaderLen {
			return
		}
		proto = pkt[6]
		p.ipLen = ipv6HeaderLen
		for j := 8; j < 40; j += 8 {
			p.hash = (p.hash ^ binary.BigEndian.Uint64(pkt[j:])) * 0x100000001b3
		}
		p.eligible = ipv6HeaderLen+int(binary.BigEndian.Uint16(pkt[4:])) == len(pkt)
	default:
		return
	}
	l4 := pkt[p.ipLen:]
	switch {
	case proto == ipProtoTCP && tcp:
		if len(l4) < tcpHeaderLen {
			return
		}
		p.l4Len = int(l4[12]>>4) * 4
		p.seq = binary.BigEndian.Uint32(l4[4:])
		p.eligible = p.eligible && p.l4Len >= tcpHeaderLen && p.l4Len <= len(l4) &&
			l4[12]&0x0f == 0 && (l4[13] == tcpFlagACK || l4[13] == tcpFlagACK|tcpFlagPSH)
		p.kind = groTCP4
		if pkt[0]>>4 == 6 {
			p.kind = groTCP6
		}
	case proto == ipProtoUDP && udp:
		if len(l4) < udpHeaderLen {
			return
		}
		p.l4Len = udpHeaderLen
		p.eligible = p.eligible && int(binary.BigEndian.Uint16(l4[4:])) == len(l4)
		p.kind = groUDP4
		if pkt[0]>>4 == 6 {
			p.kind = groUDP6
		}
	default:
		return
	}
	p.hash ^= uint64(binary.BigEndian.Uint32(l4)) * 0x9e3779b97f4a7c15
	if p.eligible {
		p.payLen = len(l4) - p.l4Len
		p.eligible = p.payLen > 0
	}
}

// finalize prepares o for writing from buf (its batch buffer): a packet
// written alone gets a zero header; one that grew gets its IP lengths, IPv4
// header checksum, UDP length and PSH fixed, the pseudo-header sum in its
// transport checksum, and a GSO header.
func (o *groOut) finalize(buf []byte, offset int) {
	if o.segs == 1 {
		o.hdr = virtioNetHdr{}
		o.hdr.encode(buf[offset-virtioNetHdrLen:])
		return
	}
	pkt := buf[offset : offset+o.origLength] // its headers are the whole's
	l4 := pkt[o.ipLen:]
	l4Len := o.length - o.ipLen // of the whole
	var src, dst []byte
	var proto uint8 = ipProtoTCP
	if !o.kind.tcp() {
		proto = ipProtoUDP
	}
	if o.kind.v4() {
		binary.BigEndian.PutUint16(pkt[2:], uint16(o.length))
		ipv4HeaderChecksum(pkt[:o.ipLen])
		src, dst = pkt[12:16], pkt[16:20]
	} else {
		binary.BigEndian.PutUint16(pkt[4:], uint16(o.length-o.ipLen))
		src, dst = pkt[8:24], pkt[24:40]
	}
	csumOff := tcpCsumOffset
	gsoType := uint8(vnetGSOUDPL4)
	if o.kind.tcp() {
		if o.psh {
			l4[13] |= tcpFlagPSH
		}
		gsoType = vnetGSOTCPv4
		if !o.kind.v4() {
			gsoType = vnetGSOTCPv6
		}
	} else {
		csumOff = udpCsumOffset
		binary.BigEndian.PutUint16(l4[4:], uint16(l4Len))
	}
	o.origCsum = binary.BigEndian.Uint16(l4[csumOff:])
	binary.BigEndian.PutUint16(l4[csumOff:], pseudoHeaderSum(src, dst, proto, l4Len))
	o.hdr = virtioNetHdr{
		flags:      vnetFlagNeedsCsum,
		gsoType:    gsoType,
		hdrLen:     uint16(o.ipLen + o.l4Len),
		gsoSize:    uint16(o.gsoSize),
		csumStart:  uint16(o.ipLen),
		csumOffset: uint16(csumOff),
	}
	o.hdr.encode(buf[offset-virtioNetHdrLen:])
}

// segments appends to iov the pieces that make up o on the wire, in order:
// its virtio-net header and first packet, then the payload of each packet
// appended to it, each from its own buffer.
func (c *coalescer) segments(iov [][]byte, bufs [][]byte, offset int, o *groOut) [][]byte {
	iov = append(iov, bufs[o.idx][offset-virtioNetHdrLen:offset+o.origLength])
	hdrLen := o.ipLen + o.l4Len
	for j := o.first; j >= 0; j = c.next[j] {
		iov = append(iov, bufs[j][offset+hdrLen:])
	}
	return iov
}

// unmerge undoes the coalescing of o (a packet that grew) after the kernel
// refused it, so that it and the packets appended to it (c.members) can be
// written one by one: o is restored to its original length and header
// fields behind a zero virtio-net header, and so are the headers of the
// appended packets, whose buffers were not changed.
func (c *coalescer) unmerge(bufs [][]byte, offset int, o *groOut) {
	if o.segs == 1 {
		return
	}
	pkt := bufs[o.idx][offset : offset+o.origLength]
	if o.kind.v4() {
		binary.BigEndian.PutUint16(pkt[2:], uint16(o.origLength))
		ipv4HeaderChecksum(pkt[:o.ipLen])
	} else {
		binary.BigEndian.PutUint16(pkt[4:], uint16(o.origLength-o.ipLen))
	}
	l4 := pkt[o.ipLen:]
	if o.kind.tcp() {
		if o.psh {
			l4[13] &^= tcpFlagPSH // a packet that could grow had no PSH
		}
		binary.BigEndian.PutUint16(l4[tcpCsumOffset:], o.origCsum)
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		binary.BigEndian.PutUint16(l4[udpCsumOffset:], o.origCsum)
	}
	o.length = o.origLength
	o.segs = 1
	o.hdr = virtioNetHdr{}
	o.hdr.encode(bufs[o.idx][offset-virtioNetHdrLen:])
	for j := o.first; j >= 0; j = c.next[j] {
		o.hdr.encode(bufs[j][offset-virtioNetHdrLen:])
	}
}
