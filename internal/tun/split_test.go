package tun

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestSplitTCP: the exported splitting for other devices (the userspace
// netstack) cuts a TCP super-packet whose checksum holds only the
// pseudo-header sum into the same segments as the TUN's own split, with
// full checksums; a packet of one segment gets its checksum completed; a
// wrong kind, a bad MSS or too few buffers are errors.
func TestSplitTCP(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    testPkt
		kind GSOTCP
		mss  int
	}{
		{"v4 64k", testPkt{src: testSrc4, dst: testDst4, seq: 7, ack: 9, flags: tcpFlagACK | tcpFlagPSH, win: 500,
			opts: tsOpts(1, 2), id: 3, payload: testPayload(0, 60000)}, GSOTCPv4, 1368},
		{"v6", testPkt{src: testSrc6, dst: testDst6, seq: 1, flags: tcpFlagACK, win: 9, payload: testPayload(2, 9000)}, GSOTCPv6, 1348},
		{"v4 one segment", testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK | tcpFlagPSH, payload: testPayload(0, 100)}, GSOTCPv4, 1368},
		{"v4 no payload (an ACK)", testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK}, GSOTCPv4, 1368},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, _ := superPacket(tc.s, tc.mss)
			want := segmentsOf(tc.s, tc.mss)
			bufs, sizes := makeBufs(offloadBatchSize)
			n, err := SplitTCP(pkt, tc.kind, tc.mss, bufs, sizes, offset)
			if err != nil || n != len(want) {
				t.Fatalf("SplitTCP = %d, %v; want %d", n, err, len(want))
			}
			for i := 0; i < n; i++ {
				got := bufs[i][offset : offset+sizes[i]]
				if err := checkPacket(got); err != nil {
					t.Errorf("segment %d: %v", i, err)
				}
				if !bytes.Equal(got, want[i]) {
					t.Errorf("segment %d differs from the expected one", i)
				}
			}
		})
	}
	s := testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK, payload: testPayload(0, 5000)}
	pkt, _ := superPacket(s, 1000)
	bufs, sizes := makeBufs(offloadBatchSize)
	for name, f := range map[string]func() (int, error){
		"v6 kind for a v4 packet": func() (int, error) { return SplitTCP(pkt, GSOTCPv6, 1000, bufs, sizes, offset) },
		"zero MSS":                func() (int, error) { return SplitTCP(pkt, GSOTCPv4, 0, bufs, sizes, offset) },
		"empty packet":            func() (int, error) { return SplitTCP(nil, GSOTCPv4, 1000, bufs, sizes, offset) },
		"truncated headers":       func() (int, error) { return SplitTCP(pkt[:30], GSOTCPv4, 1000, bufs, sizes, offset) },
	} {
		if n, err := f(); n != 0 || !errors.Is(err, ErrBadOffload) {
			t.Errorf("%s: %d, %v; want ErrBadOffload", name, n, err)
		}
	}
	if n, err := SplitTCP(pkt, GSOTCPv4, 1000, bufs[:4], sizes, offset); n != 0 || !errors.Is(err, ErrTooManySegments) {
		t.Errorf("5 segments into 4 buffers: %d, %v", n, err)
	}
}

// TestSplitTCPVec: a super-packet in pieces, cut anywhere (inside the
// headers, into empty pieces, byte by byte), splits into exactly SplitTCP's
// segments of the pieces joined; the errors are SplitTCP's.
func TestSplitTCPVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		s    testPkt
		kind GSOTCP
		mss  int
	}{
		{"v4 64k", testPkt{src: testSrc4, dst: testDst4, seq: 7, ack: 9, flags: tcpFlagACK | tcpFlagPSH | tcpFlagCWR, win: 500,
			opts: tsOpts(1, 2), id: 3, payload: testPayload(0, 60000)}, GSOTCPv4, 1368},
		{"v4 odd tail", testPkt{src: testSrc4, dst: testDst4, seq: 1 << 31, flags: tcpFlagACK | tcpFlagFIN, id: 0xffff, payload: testPayload(1, 4097)}, GSOTCPv4, 1000},
		{"v6", testPkt{src: testSrc6, dst: testDst6, seq: 1, flags: tcpFlagACK, win: 9, opts: tsOpts(3, 4), payload: testPayload(2, 9001)}, GSOTCPv6, 1348},
		{"v4 one segment", testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK | tcpFlagPSH, payload: testPayload(0, 101)}, GSOTCPv4, 1368},
		{"v4 no payload (an ACK)", testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK}, GSOTCPv4, 1368},
		{"v6 exact multiple", testPkt{src: testSrc6, dst: testDst6, seq: 5, flags: tcpFlagACK, payload: testPayload(3, 3*1200)}, GSOTCPv6, 1200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, _ := superPacket(tc.s, tc.mss)
			wantBufs, wantSizes := makeBufs(offloadBatchSize)
			wn, werr := SplitTCP(pkt, tc.kind, tc.mss, wantBufs, wantSizes, offset)
			if werr != nil {
				t.Fatalf("SplitTCP: %v", werr)
			}
			for trial := 0; trial < 50; trial++ {
				vec := cutRandomly(rng, pkt, trial)
				bufs, sizes := makeBufs(offloadBatchSize)
				n, err := SplitTCPVec(vec, tc.kind, tc.mss, bufs, sizes, offset)
				if err != nil || n != wn {
					t.Fatalf("trial %d (%d pieces): SplitTCPVec = %d, %v; want %d", trial, len(vec), n, err, wn)
				}
				for i := 0; i < n; i++ {
					got, want := bufs[i][offset:offset+sizes[i]], wantBufs[i][offset:offset+wantSizes[i]]
					if !bytes.Equal(got, want) {
						t.Fatalf("trial %d (%d pieces): segment %d differs from SplitTCP's", trial, len(vec), i)
					}
					if err := checkPacket(got); err != nil {
						t.Fatalf("trial %d: segment %d: %v", trial, i, err)
					}
				}
			}
		})
	}
	s := testPkt{src: testSrc4, dst: testDst4, seq: 1, flags: tcpFlagACK, payload: testPayload(0, 5000)}
	pkt, _ := superPacket(s, 1000)
	bufs, sizes := makeBufs(offloadBatchSize)
	split := func(vec ...[]byte) func(GSOTCP, int, int) (int, error) {
		return func(kind GSOTCP, mss, nbufs int) (int, error) {
			return SplitTCPVec(vec, kind, mss, bufs[:nbufs], sizes, offset)
		}
	}
	for name, tc := range map[string]struct {
		f          func(GSOTCP, int, int) (int, error)
		kind       GSOTCP
		mss, nbufs int
		want       error
	}{
		"v6 kind for a v4 packet": {split(pkt), GSOTCPv6, 1000, len(bufs), ErrBadOffload},
		"zero MSS":                {split(pkt), GSOTCPv4, 0, len(bufs), ErrBadOffload},
		"empty packet":            {split(), GSOTCPv4, 1000, len(bufs), ErrBadOffload},
		"empty pieces":            {split(nil, []byte{}), GSOTCPv4, 1000, len(bufs), ErrBadOffload},
		"truncated headers":       {split(pkt[:20], pkt[20:30]), GSOTCPv4, 1000, len(bufs), ErrBadOffload},
		"5 segments, 4 buffers":   {split(pkt[:50], pkt[50:]), GSOTCPv4, 1000, 4, ErrTooManySegments},
	} {
		if n, err := tc.f(tc.kind, tc.mss, tc.nbufs); n != 0 || !errors.Is(err, tc.want) {
			t.Errorf("%s: %d, %v; want %v", name, n, err, tc.want)
		}
	}
}

// cutRandomly returns pkt in pieces: for trial 0 byte by byte, otherwise
// at random points, with empty pieces among them.
func cutRandomly(rng *rand.Rand, pkt []byte, trial int) [][]byte {
	var vec [][]byte
	for len(pkt) > 0 {
		n := 1
		if trial > 0 {
			n = rng.IntN(min(len(pkt), 1+rng.IntN(20000))) + 1
		}
		if rng.IntN(8) == 0 {
			vec = append(vec, nil)
		}
		vec = append(vec, pkt[:n])
		pkt = pkt[n:]
	}
	return vec
}
