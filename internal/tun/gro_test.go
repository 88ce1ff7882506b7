package tun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
)

// tcpFlow returns n segments of one TCP flow (IPv4 or IPv6), each with a
// timestamp option and size bytes of payload, contiguous and with
// sequential IPv4 IDs; mod, if not nil, adjusts segment i before it is
// built (the sequence numbers of the following ones continue from it).
func tcpFlow(v6 bool, n, size int, mod func(i int, s *testPkt)) [][]byte {
	src, dst := testSrc4, testDst4
	if v6 {
		src, dst = testSrc6, testDst6
	}
	var pkts [][]byte
	seq, pos := uint32(1000), 0
	for i := 0; i < n; i++ {
		s := testPkt{src: src, dst: dst, seq: seq, ack: 555, flags: tcpFlagACK, win: 2000,
			opts: tsOpts(7, 9), id: uint16(300 + i), payload: testPayload(pos, size)}
		if mod != nil {
			mod(i, &s)
		}
		pkts = append(pkts, s.build())
		seq = s.seq + uint32(len(s.payload))
		pos += len(s.payload)
	}
	return pkts
}

// udpFlow returns n datagrams of size payload bytes, sizes[i] overriding.
func udpFlow(v6 bool, n, size int, mod func(i int, s *testPkt)) [][]byte {
	src, dst := testSrc4, testDst4
	if v6 {
		src, dst = testSrc6, testDst6
	}
	var pkts [][]byte
	for i := 0; i < n; i++ {
		s := testPkt{udp: true, src: src, dst: dst, id: uint16(9 + i), payload: testPayload(i, size)}
		if mod != nil {
			mod(i, &s)
		}
		pkts = append(pkts, s.build())
	}
	return pkts
}

// sameModuloID compares an original packet with the segment split from a
// coalesced packet: the IPv4 ID (and so the header checksum) of a DF packet
// may differ, as it is not kept by coalescing.
func sameModuloID(orig, seg []byte) bool {
	if len(orig) != len(seg) {
		return false
	}
	if len(orig) >= 20 && orig[0]>>4 == 4 && orig[6]&ipv4FlagDF != 0 {
		return bytes.Equal(orig[:4], seg[:4]) && bytes.Equal(orig[6:10], seg[6:10]) && bytes.Equal(orig[12:], seg[12:])
	}
	return bytes.Equal(orig, seg)
}

// Buffers for coalesceChecked to split into (tests using it do not run in
// parallel).
var (
	checkSplit [][]byte
	checkSizes []int
)

// coalesceChecked copies pkts into buffers of capacity caps[i] (the last
// one repeating; none: 65535, as the engine's), coalesces them and checks
// the result: every packet
// written alone is unchanged behind a zero header; every coalesced one has a
// consistent GSO header, IP header, partial checksum, and splits back into
// exactly the packets it was made of (up to IPv4 IDs of DF packets). It
// returns the groups of packet indices written together.
func coalesceChecked(c *coalescer, pkts [][]byte, caps []int, tcp, udp bool) ([][]int, error) {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		capacity := 65535
		if len(caps) > 0 {
			capacity = caps[min(i, len(caps)-1)]
		}
		bufs[i] = withRoom(p, capacity)
	}
	outs := c.coalesce(bufs, offset, tcp, udp)
	seen := make([]bool, len(pkts))
	var groups [][]int
	if checkSplit == nil {
		checkSplit, checkSizes = makeBufs(offloadBatchSize)
	}
	split, sizes := checkSplit, checkSizes
	for k, o := range outs {
		group := []int{o.idx}
		for j := o.first; j >= 0; j = c.next[j] {
			group = append(group, j)
		}
		for _, j := range group {
			if seen[j] {
				return nil, fmt.Errorf("packet %d written twice", j)
			}
			seen[j] = true
		}
		groups = append(groups, group)
		if k > 0 && outs[k-1].idx >= o.idx {
			return nil, fmt.Errorf("outputs out of order")
		}
		var hdr virtioNetHdr
		hdr.decode(bufs[o.idx][offset-virtioNetHdrLen:])
		if hdr != o.hdr {
			return nil, fmt.Errorf("packet %d: header in buffer %+v, returned %+v", o.idx, hdr, o.hdr)
		}
		pkt := gathered(c, bufs, &outs[k])
		if len(pkt) != o.length {
			return nil, fmt.Errorf("packet %d: %d bytes gathered, length %d", o.idx, len(pkt), o.length)
		}
		for _, j := range group[1:] {
			if !bytes.Equal(bufs[j][offset:], pkts[j]) {
				return nil, fmt.Errorf("packet %d: appended packet %d changed in its buffer", o.idx, j)
			}
		}
		if len(group) != o.segs {
			return nil, fmt.Errorf("packet %d: %d segments, %d in its chain", o.idx, o.segs, len(group))
		}
		if o.segs == 1 {
			if hdr != (virtioNetHdr{}) || !bytes.Equal(pkt, pkts[o.idx]) {
				return nil, fmt.Errorf("packet %d written alone but changed (header %+v)", o.idx, hdr)
			}
			continue
		}
		// The GSO header, checked independently of coalesce's bookkeeping.
		v4, ipLen, proto := pkt[0]>>4 == 4, ipv6HeaderLen, pkt[6]
		if v4 {
			ipLen, proto = int(pkt[0]&0xf)*4, pkt[9]
		}
		wantType, l4Len, csumOff := uint8(vnetGSOUDPL4), udpHeaderLen, udpCsumOffset
		if proto == ipProtoTCP {
			wantType, l4Len, csumOff = vnetGSOTCPv6, int(pkt[ipLen+12]>>4)*4, tcpCsumOffset
			if v4 {
				wantType = vnetGSOTCPv4
			}
		}
		firstPay := len(pkts[o.idx]) - ipLen - l4Len
		want := virtioNetHdr{flags: vnetFlagNeedsCsum, gsoType: wantType, hdrLen: uint16(ipLen + l4Len),
			gsoSize: uint16(firstPay), csumStart: uint16(ipLen), csumOffset: uint16(csumOff)}
		if hdr != want {
			return nil, fmt.Errorf("packet %d: GSO header %+v, want %+v", o.idx, hdr, want)
		}
		if len(pkt) > maxPacketLen {
			return nil, fmt.Errorf("packet %d: %d bytes", o.idx, len(pkt))
		}
		// Completing the partial checksum as the kernel would must give a
		// valid packet.
		full := bytes.Clone(pkt)
		l4 := full[ipLen:]
		binary.BigEndian.PutUint16(l4[csumOff:], fold(checksum(0, l4)))
		if err := checkPacket(full); err != nil {
			return nil, fmt.Errorf("packet %d of %d segments, checksum completed: %v", o.idx, o.segs, err)
		}
		// Splitting gives the packets back.
		n, err := gsoSplit(pkt, hdr, split, sizes, offset)
		if err != nil || n != len(group) {
			return nil, fmt.Errorf("packet %d: split into %d, %v; want %d", o.idx, n, err, len(group))
		}
		for i, j := range group {
			seg := split[i][offset : offset+sizes[i]]
			if err := checkPacket(seg); err != nil {
				return nil, fmt.Errorf("packet %d: segment %d: %v", o.idx, i, err)
			}
			if !sameModuloID(pkts[j], seg) {
				return nil, fmt.Errorf("packet %d: segment %d is not packet %d:\n got %x\nwant %x", o.idx, i, j, seg, pkts[j])
			}
		}
	}
	for j, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("packet %d not written", j)
		}
	}
	return groups, nil
}

// gathered returns o as writev writes it, without its virtio-net header.
func gathered(c *coalescer, bufs [][]byte, o *groOut) []byte {
	var pkt []byte
	for _, s := range c.segments(nil, bufs, offset, o) {
		pkt = append(pkt, s...)
	}
	return pkt[virtioNetHdrLen:]
}

func seqGroup(from, to int) []int {
	var g []int
	for i := from; i <= to; i++ {
		g = append(g, i)
	}
	return g
}

func TestCoalesce(t *testing.T) {
	interleave := func(a, b [][]byte, extra ...[]byte) [][]byte {
		var out [][]byte
		for i := range a {
			out = append(out, a[i], b[i])
		}
		return append(out[:2], append(extra, out[2:]...)...)
	}
	garbage := []byte{0x45, 0, 0, 20, 1, 2, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2} // ICMP header, no payload
	for _, tc := range []struct {
		name     string
		pkts     [][]byte
		capacity int
		udp      bool
		noTCP    bool
		want     [][]int
	}{
		{name: "tcp4 timestamps, PSH last", pkts: tcpFlow(false, 10, 1368, func(i int, s *testPkt) {
			if i == 9 {
				s.flags |= tcpFlagPSH
				s.payload = s.payload[:500]
			}
		}), want: [][]int{seqGroup(0, 9)}},
		{name: "tcp6", pkts: tcpFlow(true, 8, 1208, nil), want: [][]int{seqGroup(0, 7)}},
		{name: "PSH in the middle", pkts: tcpFlow(false, 6, 1000, func(i int, s *testPkt) {
			if i == 2 {
				s.flags |= tcpFlagPSH
			}
		}), want: [][]int{{0, 1, 2}, {3, 4, 5}}},
		{name: "PSH first", pkts: tcpFlow(true, 4, 1000, func(i int, s *testPkt) {
			if i == 0 {
				s.flags |= tcpFlagPSH
			}
		}), want: [][]int{{0}, {1, 2, 3}}},
		{name: "FIN", pkts: tcpFlow(false, 4, 1000, func(i int, s *testPkt) {
			if i == 3 {
				s.flags |= tcpFlagFIN
			}
		}), want: [][]int{{0, 1, 2}, {3}}},
		{name: "SYN, RST, CWR, URG alone", pkts: tcpFlow(false, 6, 1000, func(i int, s *testPkt) {
			s.flags |= []uint8{tcpFlagSYN, tcpFlagRST, tcpFlagCWR, 0x20, 0, 0}[i]
		}), want: [][]int{{0}, {1}, {2}, {3}, {4, 5}}},
		{name: "interleaved flows", pkts: interleave(tcpFlow(false, 3, 1000, nil), tcpFlow(true, 3, 1200, nil), garbage,
			udpFlow(false, 1, 100, nil)[0]), want: [][]int{{0, 4, 6}, {1, 5, 7}, {2}, {3}}},
		{name: "gap in seq", pkts: tcpFlow(false, 5, 1000, func(i int, s *testPkt) {
			if i == 2 {
				s.seq += 100
			}
		}), want: [][]int{{0, 1}, {2, 3, 4}}},
		{name: "seq going back", pkts: tcpFlow(false, 4, 1000, func(i int, s *testPkt) {
			if i == 2 {
				s.seq -= 1000
			}
		}), want: [][]int{{0, 1}, {2, 3}}},
		{name: "differing ACK", pkts: tcpFlow(true, 5, 1000, func(i int, s *testPkt) {
			if i >= 2 {
				s.ack++
			}
		}), want: [][]int{{0, 1}, {2, 3, 4}}},
		{name: "differing window", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			s.win += uint16(i / 2)
		}), want: [][]int{{0, 1}, {2}}},
		{name: "differing timestamp", pkts: tcpFlow(false, 4, 1000, func(i int, s *testPkt) {
			s.opts = tsOpts(uint32(7+i/2), 9)
		}), want: [][]int{{0, 1}, {2, 3}}},
		{name: "differing options length", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			if i == 1 {
				s.opts = append(s.opts, 1, 1, 1, 0)
			}
		}), want: [][]int{{0}, {1}, {2}}},
		{name: "differing TTL", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			s.ttl = uint8(64 - i/2)
		}), want: [][]int{{0, 1}, {2}}},
		{name: "differing TOS", pkts: tcpFlow(true, 3, 1000, func(i int, s *testPkt) {
			s.tos = uint8(i / 2)
		}), want: [][]int{{0, 1}, {2}}},
		{name: "differing flow label", pkts: tcpFlow(true, 3, 1000, func(i int, s *testPkt) {
			s.flow = uint32(i / 2)
		}), want: [][]int{{0, 1}, {2}}},
		{name: "differing DF", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			s.noDF = i == 2
		}), want: [][]int{{0, 1}, {2}}},
		{name: "DF, IDs not sequential", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			s.id = uint16(i * 1000)
		}), want: [][]int{{0, 1, 2}}},
		{name: "no DF, sequential IDs", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			s.noDF = true
		}), want: [][]int{{0, 1, 2}}},
		{name: "no DF, ID jump", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			s.noDF = true
			s.id = uint16(i * 1000)
		}), want: [][]int{{0}, {1}, {2}}},
		{name: "pure ACK in between", pkts: append(tcpFlow(false, 2, 1000, nil), append(
			tcpFlow(false, 1, 0, func(i int, s *testPkt) { s.seq = 3000 }),
			tcpFlow(false, 1, 1000, func(i int, s *testPkt) { s.seq = 3000 })...)...),
			want: [][]int{{0, 1}, {2}, {3}}},
		{name: "smaller then larger", pkts: tcpFlow(false, 4, 1000, func(i int, s *testPkt) {
			if i == 2 {
				s.payload = s.payload[:500]
			}
		}), want: [][]int{{0, 1, 2}, {3}}},
		{name: "first smaller", pkts: tcpFlow(false, 3, 1000, func(i int, s *testPkt) {
			if i == 0 {
				s.payload = s.payload[:500]
			}
		}), want: [][]int{{0}, {1, 2}}},
		// Payloads are gathered from their buffers: spare capacity plays
		// no part.
		{name: "no spare capacity", pkts: tcpFlow(false, 4, 1000, nil), capacity: 1, want: [][]int{seqGroup(0, 3)}},
		{name: "64 KiB", pkts: tcpFlow(false, 60, 1400, nil), want: [][]int{seqGroup(0, 45), seqGroup(46, 59)}},
		{name: "TCP off", pkts: tcpFlow(false, 3, 1000, nil), noTCP: true, want: [][]int{{0}, {1}, {2}}},
		{name: "udp4", pkts: udpFlow(false, 6, 1200, func(i int, s *testPkt) {
			if i == 5 {
				s.payload = s.payload[:300]
			}
		}), udp: true, want: [][]int{seqGroup(0, 5)}},
		{name: "udp6 larger after smaller", pkts: udpFlow(true, 4, 1200, func(i int, s *testPkt) {
			if i == 1 {
				s.payload = s.payload[:300]
			}
		}), udp: true, want: [][]int{{0, 1}, {2, 3}}},
		{name: "udp off", pkts: udpFlow(false, 3, 1200, nil), want: [][]int{{0}, {1}, {2}}},
		{name: "udp ports", pkts: udpFlow(false, 4, 1200, func(i int, s *testPkt) {
			s.dst = testDst4
			if i%2 == 1 {
				s.dst = testSrc4
			}
		}), udp: true, want: [][]int{{0, 2}, {1, 3}}},
		{name: "udp 64 segments", pkts: udpFlow(true, 70, 100, nil), udp: true, want: [][]int{seqGroup(0, 63), seqGroup(64, 69)}},
		{name: "IPv4 options", pkts: func() [][]byte {
			pkts := tcpFlow(false, 3, 1000, nil)
			for i, p := range pkts { // insert 4 bytes of NOP options
				q := append(append(append([]byte{}, p[:20]...), 1, 1, 1, 0), p[20:]...)
				q[0] = 0x46
				binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
				q[10], q[11] = 0, 0
				binary.BigEndian.PutUint16(q[10:], fold(checksum(0, q[:24])))
				pkts[i] = q
			}
			return pkts
		}(), want: [][]int{{0}, {1}, {2}}},
		{name: "bad IPv4 header checksum", pkts: func() [][]byte {
			pkts := tcpFlow(false, 3, 1000, nil)
			pkts[1][10] ^= 1
			return pkts
		}(), want: [][]int{{0}, {1}, {2}}},
		{name: "IPv6 extension header", pkts: func() [][]byte {
			pkts := tcpFlow(true, 2, 1000, nil)
			pkts[1][6] = 0 // hop-by-hop
			return pkts
		}(), want: [][]int{{0}, {1}}},
		{name: "padded", pkts: func() [][]byte {
			pkts := tcpFlow(false, 2, 1000, nil)
			pkts[1] = append(pkts[1], 0, 0)
			return pkts
		}(), want: [][]int{{0}, {1}}},
		{name: "short and odd", pkts: [][]byte{{}, {0x45}, {0x60, 0, 0}, garbage[:19], garbage}, udp: true,
			want: [][]int{{0}, {1}, {2}, {3}, {4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c coalescer
			var caps []int
			if tc.capacity > 0 {
				caps = []int{tc.capacity}
			}
			groups, err := coalesceChecked(&c, tc.pkts, caps, !tc.noTCP, tc.udp)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(groups, tc.want, slices.Equal) {
				t.Fatalf("groups %v, want %v", groups, tc.want)
			}
			// The scratch space is reused.
			if groups, err := coalesceChecked(&c, tc.pkts, caps, !tc.noTCP, tc.udp); err != nil ||
				!slices.EqualFunc(groups, tc.want, slices.Equal) {
				t.Fatalf("again: groups %v, %v", groups, err)
			}
		})
	}
}

// unmerge restores a coalesced packet and zeroes the headers of all its
// packets, for writing them one by one.
func TestUnmerge(t *testing.T) {
	for _, pkts := range [][][]byte{
		tcpFlow(false, 5, 1000, func(i int, s *testPkt) {
			if i == 4 {
				s.flags |= tcpFlagPSH
			}
		}),
		tcpFlow(true, 3, 1000, nil),
		udpFlow(false, 3, 500, nil),
		udpFlow(true, 3, 500, nil),
	} {
		bufs := make([][]byte, len(pkts))
		for i, p := range pkts {
			bufs[i] = withRoom(p, 65535)
			copy(bufs[i], "0123456789abcdef") // the header room is not zero
		}
		var c coalescer
		outs := c.coalesce(bufs, offset, true, true)
		if len(outs) != 1 || outs[0].segs != len(pkts) {
			t.Fatalf("%d outputs", len(outs))
		}
		o := &outs[0]
		c.unmerge(bufs, offset, o)
		if o.segs != 1 || o.length != len(pkts[0]) || o.hdr != (virtioNetHdr{}) {
			t.Fatalf("after unmerge: %+v", o)
		}
		if got := bufs[0][offset : offset+o.length]; !bytes.Equal(got, pkts[0]) {
			t.Fatalf("head not restored:\n got %x\nwant %x", got, pkts[0])
		}
		for i := range pkts {
			if !bytes.Equal(bufs[i][offset-virtioNetHdrLen:offset], make([]byte, virtioNetHdrLen)) ||
				!bytes.Equal(bufs[i][offset:], pkts[i]) {
				t.Fatalf("packet %d not ready to write alone", i)
			}
		}
	}
}
