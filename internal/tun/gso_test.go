package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// superPacket builds s as the kernel hands a super-packet to a TUN: one
// packet of all the payload, the pseudo-header sum in the transport
// checksum, a virtio-net header for segments of gsoSize payload bytes. Like
// the kernel's, its hdr_len is not the length of the headers.
func superPacket(s testPkt, gsoSize int) ([]byte, virtioNetHdr) {
	pkt := s.build()
	ipLen, proto := ipv4HeaderLen, uint8(ipProtoTCP)
	var src, dst []byte
	if s.src.Addr().Is4() {
		src, dst = pkt[12:16], pkt[16:20]
	} else {
		ipLen = ipv6HeaderLen
		src, dst = pkt[8:24], pkt[24:40]
	}
	hdr := virtioNetHdr{
		flags:     vnetFlagNeedsCsum,
		hdrLen:    uint16(min(len(pkt), 128)),
		gsoSize:   uint16(gsoSize),
		csumStart: uint16(ipLen),
	}
	switch {
	case s.udp:
		proto = ipProtoUDP
		hdr.gsoType, hdr.csumOffset = vnetGSOUDPL4, udpCsumOffset
	case ipLen == ipv4HeaderLen:
		hdr.gsoType, hdr.csumOffset = vnetGSOTCPv4, tcpCsumOffset
	default:
		hdr.gsoType, hdr.csumOffset = vnetGSOTCPv6, tcpCsumOffset
	}
	partial := ^fold(pseudoSum(src, dst, proto, len(pkt)-ipLen))
	binary.BigEndian.PutUint16(pkt[ipLen+int(hdr.csumOffset):], partial)
	return pkt, hdr
}

// segmentsOf builds the packets the super-packet of s cut at gsoSize stands
// for, independently of gsoSplit.
func segmentsOf(s testPkt, gsoSize int) [][]byte {
	var segs [][]byte
	n := max(1, (len(s.payload)+gsoSize-1)/gsoSize)
	for i := 0; i < n; i++ {
		seg := s
		seg.payload = s.payload[i*gsoSize : min((i+1)*gsoSize, len(s.payload))]
		seg.seq = s.seq + uint32(i*gsoSize)
		seg.id = s.id + uint16(i)
		if i != n-1 {
			seg.flags &^= tcpFlagFIN | tcpFlagPSH
		}
		if i != 0 {
			seg.flags &^= tcpFlagCWR
		}
		segs = append(segs, seg.build())
	}
	return segs
}

func TestSplitSuperPackets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s       testPkt
		gsoSize int
		ecn     bool
		segs    int
	}{
		{"tcp4 64k timestamps", testPkt{src: testSrc4, dst: testDst4, seq: 1e9, ack: 77, flags: tcpFlagACK | tcpFlagPSH,
			win: 501, opts: tsOpts(1, 2), id: 100, payload: testPayload(0, 64000)}, 1388, false, 47},
		{"tcp6 FIN", testPkt{src: testSrc6, dst: testDst6, seq: 0xffffff00, ack: 5, flags: tcpFlagACK | tcpFlagPSH | tcpFlagFIN,
			win: 1000, opts: tsOpts(9, 8), flow: 0x12345, tos: 0x20, payload: testPayload(3, 10000)}, 1208, false, 9},
		{"tcp4 CWR exact multiple", testPkt{src: testSrc4, dst: testDst4, seq: 1, ack: 2, flags: tcpFlagACK | tcpFlagCWR,
			win: 3, tos: 2, payload: testPayload(0, 3000)}, 1000, true, 3},
		{"tcp4 no DF, ID wraps", testPkt{src: testSrc4, dst: testDst4, seq: 5, flags: tcpFlagACK, noDF: true, id: 65534,
			payload: testPayload(1, 5000)}, 1448, false, 4},
		{"tcp4 one segment", testPkt{src: testSrc4, dst: testDst4, seq: 5, flags: tcpFlagACK | tcpFlagPSH,
			payload: testPayload(1, 500)}, 1448, false, 1},
		{"udp4", testPkt{udp: true, src: testSrc4, dst: testDst4, id: 7, payload: testPayload(0, 4000)}, 1200, false, 4},
		{"udp6", testPkt{udp: true, src: testSrc6, dst: testDst6, payload: testPayload(5, 3600)}, 1200, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, hdr := superPacket(tc.s, tc.gsoSize)
			if tc.ecn {
				hdr.gsoType |= vnetGSOECN
			}
			want := segmentsOf(tc.s, tc.gsoSize)
			if len(want) != tc.segs {
				t.Fatalf("test expects %d segments, built %d", tc.segs, len(want))
			}
			bufs, sizes := makeBufs(offloadBatchSize)
			n, err := gsoSplit(pkt, hdr, bufs, sizes, offset)
			if err != nil || n != tc.segs {
				t.Fatalf("gsoSplit = %d, %v; want %d segments", n, err, tc.segs)
			}
			var payload []byte
			for i := 0; i < n; i++ {
				got := bufs[i][offset : offset+sizes[i]]
				if err := checkPacket(got); err != nil {
					t.Errorf("segment %d: %v", i, err)
				}
				if !bytes.Equal(got, want[i]) {
					t.Errorf("segment %d:\n got %x\nwant %x", i, got[:60], want[i][:60])
				}
				chunk := min(tc.gsoSize, len(tc.s.payload)-i*tc.gsoSize)
				payload = append(payload, got[len(got)-chunk:]...)
			}
			if !bytes.Equal(payload, tc.s.payload) {
				t.Error("segments do not carry the payload")
			}
			// Exactly as many buffers as segments is enough; one fewer is not.
			if n, err := gsoSplit(pkt, hdr, bufs[:tc.segs], sizes, offset); n != tc.segs || err != nil {
				t.Errorf("gsoSplit into %d buffers = %d, %v", tc.segs, n, err)
			}
			if tc.segs > 1 {
				if n, err := gsoSplit(pkt, hdr, bufs[:tc.segs-1], sizes, offset); n != 0 || !errors.Is(err, ErrTooManySegments) {
					t.Errorf("gsoSplit into %d buffers = %d, %v; want ErrTooManySegments", tc.segs-1, n, err)
				}
			}
		})
	}
}

func TestSplitSingle(t *testing.T) {
	for _, s := range []testPkt{
		{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK | tcpFlagPSH, opts: tsOpts(1, 1), payload: testPayload(0, 1000)},
		{src: testSrc6, dst: testDst6, seq: 1, flags: tcpFlagSYN},
		{udp: true, src: testSrc4, dst: testDst4, payload: testPayload(0, 33)},
		{udp: true, src: testSrc6, dst: testDst6, payload: testPayload(0, 1)},
	} {
		want := s.build()
		// A partial checksum is completed.
		pkt, hdr := superPacket(s, 1500)
		hdr.gsoType, hdr.gsoSize = vnetGSONone, 0
		bufs, sizes := makeBufs(2)
		if n, err := gsoSplit(pkt, hdr, bufs, sizes, offset); n != 1 || err != nil {
			t.Fatalf("gsoSplit = %d, %v", n, err)
		}
		if got := bufs[0][offset : offset+sizes[0]]; !bytes.Equal(got, want) {
			t.Errorf("completed:\n got %x\nwant %x", got, want)
		}
		// Without NEEDS_CSUM the packet is copied as it is.
		hdr.flags = 0
		if n, err := gsoSplit(pkt, hdr, bufs, sizes, offset); n != 1 || err != nil {
			t.Fatalf("gsoSplit = %d, %v", n, err)
		}
		if got := bufs[0][offset : offset+sizes[0]]; !bytes.Equal(got, pkt) {
			t.Errorf("copied:\n got %x\nwant %x", got, pkt)
		}
	}
}

func TestSplitErrors(t *testing.T) {
	good := testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK, payload: testPayload(0, 3000)}
	pkt4, hdr4 := superPacket(good, 1000)
	good.src, good.dst = testSrc6, testDst6
	pkt6, hdr6 := superPacket(good, 1000)
	for _, tc := range []struct {
		name   string
		pkt    []byte
		hdr    virtioNetHdr
		bufLen int
		want   error
	}{
		{"empty", nil, hdr4, 0, ErrBadOffload},
		{"TCPV6 header on IPv4", pkt4, virtioNetHdr{gsoType: vnetGSOTCPv6, gsoSize: 1000}, 0, ErrBadOffload},
		{"TCPV4 header on IPv6", pkt6, virtioNetHdr{gsoType: vnetGSOTCPv4, gsoSize: 1000}, 0, ErrBadOffload},
		{"UDP header on TCP", pkt4, virtioNetHdr{gsoType: vnetGSOUDPL4, gsoSize: 1000}, 0, ErrBadOffload},
		{"UFO", pkt4, virtioNetHdr{gsoType: 3, gsoSize: 1000}, 0, ErrBadOffload},
		{"gso_size 0", pkt4, virtioNetHdr{gsoType: vnetGSOTCPv4}, 0, ErrBadOffload},
		{"csum_start not at TCP", pkt4, virtioNetHdr{flags: vnetFlagNeedsCsum, gsoType: vnetGSOTCPv4, gsoSize: 1000, csumStart: 24}, 0, ErrBadOffload},
		{"truncated IPv4", pkt4[:19], hdr4, 0, ErrBadOffload},
		{"truncated TCP", pkt4[:39], hdr4, 0, ErrBadOffload},
		{"truncated IPv6", pkt6[:50], hdr6, 0, ErrBadOffload},
		{"too many segments", pkt4, virtioNetHdr{gsoType: vnetGSOTCPv4, gsoSize: 1}, 0, ErrTooManySegments},
		{"segment does not fit", pkt4, hdr4, offset + 1000, ErrBadOffload},
		{"packet does not fit", pkt4, virtioNetHdr{}, offset + 1000, ErrBadOffload},
		{"checksum outside", pkt4[:40], virtioNetHdr{flags: vnetFlagNeedsCsum, csumStart: 30, csumOffset: 9}, 0, ErrBadOffload},
	} {
		bufs, sizes := makeBufs(8)
		if tc.bufLen > 0 {
			for i := range bufs {
				bufs[i] = bufs[i][:tc.bufLen]
			}
		}
		if n, err := gsoSplit(tc.pkt, tc.hdr, bufs, sizes, offset); n != 0 || !errors.Is(err, tc.want) {
			t.Errorf("%s: gsoSplit = %d, %v; want %v", tc.name, n, err, tc.want)
		}
	}
	bufs, sizes := makeBufs(8)
	if n, err := gsoSplit(pkt4, hdr4, nil, nil, offset); n != 0 || err == nil {
		t.Errorf("no buffers: %d, %v", n, err)
	}
	if n, err := gsoSplit(pkt4, hdr4, bufs, sizes, -1); n != 0 || err == nil {
		t.Errorf("negative offset: %d, %v", n, err)
	}
}

func BenchmarkSplit(b *testing.B) {
	s := testPkt{src: testSrc4, dst: testDst4, seq: 1, ack: 1, flags: tcpFlagACK | tcpFlagPSH,
		opts: tsOpts(1, 2), payload: testPayload(0, 65535-20-32)}
	pkt, hdr := superPacket(s, 1420-20-32)
	bufs, sizes := makeBufs(offloadBatchSize)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n, _ = gsoSplit(pkt, hdr, bufs, sizes, offset)
	}
	b.ReportMetric(float64(n), "segments")
}

func FuzzSplit(f *testing.F) {
	add := func(pkt []byte, hdr virtioNetHdr) {
		h := make([]byte, virtioNetHdrLen)
		hdr.encode(h)
		f.Add(h, pkt, uint8(64))
	}
	add(superPacket(testPkt{src: testSrc4, dst: testDst4, flags: tcpFlagACK | tcpFlagFIN, opts: tsOpts(1, 2), payload: testPayload(0, 3000)}, 1000))
	add(superPacket(testPkt{src: testSrc6, dst: testDst6, flags: tcpFlagACK | tcpFlagCWR, payload: testPayload(0, 2000)}, 700))
	add(superPacket(testPkt{udp: true, src: testSrc4, dst: testDst4, payload: testPayload(0, 1000)}, 300))
	add(superPacket(testPkt{udp: true, src: testSrc6, dst: testDst6, payload: testPayload(0, 1000)}, 999))
	add(superPacket(testPkt{src: testSrc4, dst: testDst4, flags: tcpFlagSYN}, 1))
	bufs, sizes := makeBufs(64)
	for i := range bufs {
		bufs[i] = bufs[i][:offset+2000]
	}
	f.Fuzz(func(t *testing.T, h, pkt []byte, nbufs uint8) {
		if len(h) < virtioNetHdrLen {
			return
		}
		var hdr virtioNetHdr
		hdr.decode(h)
		n, err := gsoSplit(pkt, hdr, bufs[:int(nbufs)%(len(bufs)+1)], sizes, offset)
		if err != nil {
			if n != 0 {
				t.Fatalf("%d segments and error %v", n, err)
			}
			return
		}
		if hdr.gsoType&^vnetGSOECN == vnetGSONone {
			got := bufs[0][offset : offset+sizes[0]]
			if n != 1 || len(got) != len(pkt) {
				t.Fatalf("%d packets of %d bytes from a %d-byte packet", n, len(got), len(pkt))
			}
			if hdr.flags&vnetFlagNeedsCsum == 0 && !bytes.Equal(got, pkt) {
				t.Fatal("packet changed")
			}
			return
		}
		total := 0
		for i := 0; i < n; i++ {
			seg := bufs[i][offset : offset+sizes[i]]
			if err := checkPacket(seg); err != nil {
				t.Fatalf("segment %d of %d: %v\n%x", i, n, err, seg)
			}
			total += len(seg)
		}
		if total < len(pkt) {
			t.Fatalf("segments of %d bytes from a %d-byte packet", total, len(pkt))
		}
	})
}

// BenchmarkSplitCold splits into segment buffers taken in turn from a set
// much larger than the caches, as the engine's pooled buffers are when
// packets are in flight: it measures the split with cold destinations.
func BenchmarkSplitCold(b *testing.B) {
	s := testPkt{src: testSrc4, dst: testDst4, seq: 1, ack: 1, flags: tcpFlagACK | tcpFlagPSH,
		opts: tsOpts(1, 2), payload: testPayload(0, 65535-20-32)}
	pkt, hdr := superPacket(s, 1420-20-32)
	const sets = 64 // 64 × 128 buffers of 64 KiB: 512 MiB
	var all [sets][][]byte
	var sizes []int
	for i := range all {
		all[i], sizes = makeBufs(offloadBatchSize)
	}
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		gsoSplit(pkt, hdr, all[i%sets], sizes, offset)
		i++
	}
}
