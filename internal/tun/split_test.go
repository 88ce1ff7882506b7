package tun

import (
	"bytes"
	"errors"
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
