package daemon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/tun/tuntest"
)

// TestCaptureNeverBlocks checks that a capture whose reader does not read
// drops (and counts) what does not fit its queue instead of waiting.
func TestCaptureNeverBlocks(t *testing.T) {
	var st captureState
	s := &captureSub{ch: make(chan capturedPacket, 4)}
	done := make(chan struct{})
	go func() {
		for range 10 {
			s.offer(&st, capturedPacket{t: time.Now(), data: []byte{1}})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("offer blocked on a full queue")
	}
	if len(s.ch) != 4 || st.dropped.Load() != 6 {
		t.Fatalf("queued %d, dropped %d; want 4 and 6", len(s.ch), st.dropped.Load())
	}
}

func TestHasAddr(t *testing.T) {
	a, b := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	pkt := tuntest.UDPPacket(netip.AddrPortFrom(a, 1), netip.AddrPortFrom(b, 2), []byte("x"))
	if !hasAddr(pkt, a) || !hasAddr(pkt, b) || hasAddr(pkt, netip.MustParseAddr("100.64.0.3")) || hasAddr(pkt, netip.MustParseAddr("fd00::1")) {
		t.Fatal("IPv4 address filter")
	}
	a6, b6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	pkt6 := tuntest.UDPPacket(netip.AddrPortFrom(a6, 1), netip.AddrPortFrom(b6, 2), []byte("x"))
	if !hasAddr(pkt6, b6) || hasAddr(pkt6, a) {
		t.Fatal("IPv6 address filter")
	}
}
