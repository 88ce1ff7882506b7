package tun

import (
	"math/rand/v2"
	"testing"
)

// checksumAdd agrees with the plain 16-bit loop of packet_test.go for every
// length, start alignment and initial value.
func TestChecksumAdd(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1200)
	for trial := 0; trial < 3000; trial++ {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if trial%7 == 0 {
			for i := range buf {
				buf[i] = 0xff // many carries
			}
		}
		start := r.IntN(8)
		n := r.IntN(len(buf) - start)
		if trial < 100 {
			n = trial
		}
		b := buf[start : start+n]
		initial := uint16(r.Uint32())
		want := ^fold(checksum(uint32(initial), b))
		got := checksumAdd(b, initial)
		// 0x0000 and 0xffff are both zero in one's complement.
		if got != want && !(got^want == 0xffff && (got == 0 || want == 0)) {
			t.Fatalf("len %d start %d initial %#x: checksumAdd = %#04x, want %#04x", n, start, initial, got, want)
		}
	}
	if got := checksumAdd(nil, 0); got != 0 {
		t.Errorf("checksumAdd(nil, 0) = %#x", got)
	}
	// Split at an even length, sums continue.
	b := buf[:999]
	if got, want := checksumAdd(b[500:], checksumAdd(b[:500], 0)), checksumAdd(b, 0); got != want {
		t.Errorf("continued sum %#x, whole %#x", got, want)
	}
}

func TestIPv4HeaderChecksum(t *testing.T) {
	pkt := testPkt{src: testSrc4, dst: testDst4, id: 4242, tos: 3, payload: []byte("x")}.build()
	h := pkt[:20]
	if !ipv4HeaderValid(h) {
		t.Fatal("built header not valid")
	}
	want := [2]byte{h[10], h[11]}
	h[10], h[11] = 0x12, 0x34
	if ipv4HeaderValid(h) {
		t.Fatal("corrupted header valid")
	}
	ipv4HeaderChecksum(h)
	if [2]byte{h[10], h[11]} != want {
		t.Fatalf("checksum %x, want %x", h[10:12], want)
	}
}

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, 1500)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		checksumAdd(buf, 0)
	}
}
