package tun

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// fuzzBatch turns fuzz input into a batch of packets and the capacities of
// their buffers. Every 4 bytes make a packet of one of five flows (TCP over
// IPv4, twice, and IPv6; UDP over IPv4 and IPv6) whose size, flags, options,
// sequence gaps, TTL, IPv4 ID and DF, and buffer capacity they choose; a
// first byte of 0xff instead takes the next bytes as a raw packet, its
// checksums repaired if it parses as TCP or UDP. All packets have valid
// checksums, or are not TCP/UDP.
func fuzzBatch(data []byte) (pkts [][]byte, caps []int) {
	type flow struct {
		udp      bool
		src, dst netip.AddrPort
		seq      uint32
		id       uint16
		pos      int
	}
	flows := []flow{
		{src: testSrc4, dst: testDst4, seq: 1},
		{src: netip.AddrPortFrom(testSrc4.Addr(), 1), dst: testDst4, seq: 0xfffff000},
		{src: testSrc6, dst: testDst6},
		{udp: true, src: testSrc4, dst: testDst4},
		{udp: true, src: testSrc6, dst: testDst6},
	}
	for len(data) >= 4 && len(pkts) < offloadBatchSize {
		b0, b1, b2, b3 := data[0], data[1], data[2], data[3]
		data = data[4:]
		var pkt []byte
		if b0 == 0xff {
			n := min(int(b1), len(data))
			pkt = repairChecksums(bytes.Clone(data[:n]))
			data = data[n:]
		} else {
			f := &flows[int(b0&7)%len(flows)]
			size := int(b1) * 6
			s := testPkt{udp: f.udp, src: f.src, dst: f.dst, seq: f.seq, ack: 1 + uint32(b2>>6),
				flags: tcpFlagACK, win: 100, id: f.id, noDF: b0&0x40 != 0, payload: testPayload(f.pos, size)}
			if b0&0x20 != 0 {
				s.opts = tsOpts(uint32(b3>>6), 5)
			}
			switch b2 & 7 {
			case 1, 2:
				s.flags |= tcpFlagPSH
			case 3:
				s.flags |= tcpFlagFIN
			case 4:
				s.flags = tcpFlagSYN
			case 5:
				s.flags |= tcpFlagCWR
			}
			if b2&0x08 != 0 {
				s.seq += 1000
			}
			if b2&0x10 != 0 {
				s.ttl = 63
			}
			if b2&0x20 != 0 {
				s.id += 7
			}
			if b0&0x80 != 0 {
				s.tos = 1
			}
			pkt = s.build()
			f.seq = s.seq + uint32(size)
			f.id = s.id + 1
			f.pos += size
		}
		pkts = append(pkts, pkt)
		switch b3 & 3 {
		case 1:
			caps = append(caps, offset+len(pkt))
		case 2:
			caps = append(caps, offset+len(pkt)+int(b3>>2)*100)
		default:
			caps = append(caps, 65535)
		}
	}
	return pkts, caps
}

// repairChecksums gives pkt valid checksums if it is a consistent IPv4 or
// IPv6 packet carrying TCP or UDP.
func repairChecksums(pkt []byte) []byte {
	if len(pkt) < 20 {
		return pkt
	}
	var l4, src, dst []byte
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0xf) * 4
		if ihl < 20 || len(pkt) < ihl || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return pkt
		}
		pkt[10], pkt[11] = 0, 0
		binary.BigEndian.PutUint16(pkt[10:], fold(checksum(0, pkt[:ihl])))
		proto, src, dst, l4 = pkt[9], pkt[12:16], pkt[16:20], pkt[ihl:]
	case 6:
		if len(pkt) < 40 || 40+int(binary.BigEndian.Uint16(pkt[4:])) != len(pkt) {
			return pkt
		}
		proto, src, dst, l4 = pkt[6], pkt[8:24], pkt[24:40], pkt[40:]
	default:
		return pkt
	}
	off := 0
	switch {
	case proto == ipProtoTCP && len(l4) >= 20:
		off = tcpCsumOffset
	case proto == ipProtoUDP && len(l4) >= 8:
		off = udpCsumOffset
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	default:
		return pkt
	}
	l4[off], l4[off+1] = 0, 0
	c := fold(checksum(pseudoSum(src, dst, proto, len(l4)), l4))
	if c == 0 && proto == ipProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
	return pkt
}

// FuzzCoalesce checks that coalescing never panics, that packets written
// alone are unchanged, and that coalesced packets carry valid headers and
// partial checksums and split back into the packets they were made of, all
// with valid checksums (see coalesceChecked).
func FuzzCoalesce(f *testing.F) {
	f.Add([]byte{0, 200, 0, 0, 0, 200, 0, 0, 2, 200, 0, 0, 3, 200, 0, 0, 0, 200, 1, 0, 3, 200, 0, 0, 2, 10, 0, 0})
	f.Add([]byte{0x20, 200, 0, 1, 0x20, 200, 0, 1, 0x20, 200, 8, 2, 0x20, 200, 0x10, 0, 0x60, 100, 0, 0, 0x60, 100, 0x20, 0})
	f.Add([]byte{4, 200, 0, 0, 4, 200, 0, 0, 4, 100, 0, 0, 4, 200, 0, 0, 1, 250, 3, 0, 1, 250, 4, 0})
	f.Add(append([]byte{0xff, 40, 0, 0}, testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK, payload: []byte("0123456789abcdef")}.build()...))
	var c coalescer
	f.Fuzz(func(t *testing.T, data []byte) {
		pkts, caps := fuzzBatch(data)
		udp := len(data)%2 == 0
		if _, err := coalesceChecked(&c, pkts, caps, true, udp); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkCoalesce coalesces a batch of 128 segments of two interleaved
// TCP flows (into 64 KiB packets).
func BenchmarkCoalesce(b *testing.B) {
	a := tcpFlow(false, 64, 1368, nil)
	z := tcpFlow(true, 64, 1348, nil)
	bufs := make([][]byte, 0, 128)
	total := 0
	for i := range a {
		bufs = append(bufs, withRoom(a[i], 65535), withRoom(z[i], 65535))
		total += len(a[i]) + len(z[i])
	}
	var c coalescer
	b.SetBytes(int64(total))
	b.ReportAllocs()
	var n int
	for b.Loop() {
		outs := c.coalesce(bufs, offset, true, true)
		n = len(outs)
		for k := range outs {
			c.unmerge(bufs, offset, &outs[k]) // for the next round
		}
	}
	b.ReportMetric(float64(n), "packets")
}
