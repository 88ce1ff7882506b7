package portmap

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// run starts c.Run and waits until the first refresh armed its timer.
func run(t *testing.T, c *Client, clk *clock.Fake) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait.Until(t, "first refresh", func() bool { _, ok := clk.Next(); return ok })
	return cancel
}

// advanceToNext moves the fake clock to the client's next refresh and
// waits until that refresh has armed the timer again.
func advanceToNext(t *testing.T, clk *clock.Fake) {
	t.Helper()
	next, ok := clk.Next()
	if !ok {
		t.Fatal("no refresh scheduled")
	}
	clk.Advance(next.Sub(clk.Now()))
	wait.Until(t, "refresh after advance", func() bool { _, ok := clk.Next(); return ok })
}

func TestMapsWithPCPAndRenewsAtHalfLifetime(t *testing.T) {
	clk := clock.NewFake(t0)
	g := newFakeGateway(t, clk, true, true)
	c := newTestClient(t, g, clk)
	run(t, c, clk)
	m, ok := c.Mapping()
	if !ok || m.Protocol != PCP || m.External != netip.MustParseAddrPort("11.19.0.1:50000") || m.Lifetime != time.Minute {
		t.Fatalf("mapping %+v %v, want PCP 11.19.0.1:50000 for 1m", m, ok)
	}
	if next, _ := clk.Next(); next.Sub(clk.Now()) != 30*time.Second {
		t.Fatalf("renewal in %v, want 30s (half the lifetime)", next.Sub(clk.Now()))
	}
	advanceToNext(t, clk)
	if n := g.count("pcp-map"); n != 2 {
		t.Fatalf("%d MAP requests, want 2 (map, renew)", n)
	}
	if g.nonces[0] != g.nonces[1] {
		t.Error("the renewal used another nonce")
	}
	if m2, _ := c.Mapping(); m2.External != m.External {
		t.Errorf("renewal moved the mapping to %v", m2.External)
	}
}

func TestFallsBackToNATPMP(t *testing.T) {
	clk := clock.NewFake(t0)
	g := newFakeGateway(t, clk, false, true) // answers PCP with "unsupported version"
	c := newTestClient(t, g, clk)
	run(t, c, clk)
	m, ok := c.Mapping()
	if !ok || m.Protocol != NATPMP || m.External != netip.MustParseAddrPort("11.19.0.1:50000") {
		t.Fatalf("mapping %+v %v, want NAT-PMP 11.19.0.1:50000", m, ok)
	}
	advanceToNext(t, clk)
	if n := g.count("pmp-map"); n != 2 {
		t.Fatalf("%d NAT-PMP map requests, want 2", n)
	}
	if n := g.count("pcp-map"); n != 0 {
		t.Errorf("PCP asked again after the gateway said it does not speak it: %d", n)
	}
}

// A gateway that restarts loses its mappings and its epoch starts again:
// the next renewal sees the epoch go back, counts it, asks again and the
// mapping is re-created.
func TestRemapsAfterGatewayRestart(t *testing.T) {
	for _, p := range []Protocol{PCP, NATPMP} {
		t.Run(string(p), func(t *testing.T) {
			clk := clock.NewFake(t0)
			g := newFakeGateway(t, clk, p == PCP, true)
			c := newTestClient(t, g, clk, p)
			run(t, c, clk)
			clk.Advance(20 * time.Second)
			g.restart()
			if _, ok := g.mapped(41641); ok {
				t.Fatal("restart kept the mapping")
			}
			advanceToNext(t, clk)
			if _, ok := g.mapped(41641); !ok {
				t.Fatal("mapping not re-created after the restart")
			}
			if n := c.Stats.BadEpoch.Load(); n != 1 {
				t.Errorf("BadEpoch = %d, want 1", n)
			}
			if _, ok := c.Mapping(); !ok {
				t.Error("client lost its mapping")
			}
		})
	}
}

func TestDeletesOnClose(t *testing.T) {
	for _, p := range []Protocol{PCP, NATPMP} {
		t.Run(string(p), func(t *testing.T) {
			clk := clock.NewFake(t0)
			g := newFakeGateway(t, clk, true, true)
			c := newTestClient(t, g, clk, p)
			cancel := run(t, c, clk)
			if _, ok := g.mapped(41641); !ok {
				t.Fatal("not mapped")
			}
			cancel()
			if err := c.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, ok := g.mapped(41641); ok {
				t.Error("mapping still on the gateway after Close")
			}
			if _, ok := c.Mapping(); ok {
				t.Error("client still reports a mapping")
			}
		})
	}
}

// Forged replies — another source, another nonce, an epoch that does not
// fit — arriving ahead of the gateway's real answer are ignored and
// counted; the mapping is the real one.
func TestForgedRepliesIgnoredAndCounted(t *testing.T) {
	forgedExt := netip.MustParseAddr("203.0.113.66")
	t.Run("pcp wrong nonce", func(t *testing.T) {
		clk := clock.NewFake(t0)
		g := newFakeGateway(t, clk, true, true)
		g.before = func(req []byte) [][]byte {
			b := make([]byte, 60)
			b[0], b[1] = 2, 0x81
			binary.BigEndian.PutUint32(b[4:], 3600)
			copy(b[24:], req[24:60])
			b[24] ^= 0xff // another nonce
			binary.BigEndian.PutUint16(b[42:], 666)
			ip := netip.AddrFrom16(forgedExt.As16()).As16()
			copy(b[44:], ip[:])
			return [][]byte{b}
		}
		c := newTestClient(t, g, clk, PCP)
		run(t, c, clk)
		if m, _ := c.Mapping(); m.External.Addr() != g.ext {
			t.Fatalf("mapping %v: the forgery was taken", m.External)
		}
		if n := c.Stats.WrongNonce.Load(); n != 1 {
			t.Errorf("WrongNonce = %d, want 1", n)
		}
	})
	t.Run("nat-pmp wrong epoch", func(t *testing.T) {
		clk := clock.NewFake(t0)
		g := newFakeGateway(t, clk, false, true)
		c := newTestClient(t, g, clk, NATPMP)
		run(t, c, clk)
		clk.Advance(20 * time.Second)
		// Now every answer is preceded by a forged one claiming epoch 1
		// (a restart) and another port; only the real one may be used.
		g.mu.Lock()
		g.before = func(req []byte) [][]byte {
			if req[1] != 1 {
				return nil
			}
			b := make([]byte, 16)
			b[1] = 129
			binary.BigEndian.PutUint32(b[4:], 1)
			binary.BigEndian.PutUint16(b[8:], 41641)
			binary.BigEndian.PutUint16(b[10:], 666)
			binary.BigEndian.PutUint32(b[12:], 3600)
			return [][]byte{b}
		}
		g.mu.Unlock()
		advanceToNext(t, clk)
		if m, _ := c.Mapping(); m.External.Port() != 50000 {
			t.Fatalf("mapping %v: the forgery was taken", m.External)
		}
		if n := c.Stats.BadEpoch.Load(); n == 0 {
			t.Error("BadEpoch not counted")
		}
	})
	t.Run("another source", func(t *testing.T) {
		clk := clock.NewFake(t0)
		g := newFakeGateway(t, clk, true, false)
		// A LAN host answers first, from another port of the gateway's
		// address, with the right nonce.
		rogue, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer rogue.Close()
		g.before = func(req []byte) [][]byte {
			b := make([]byte, 60)
			b[0], b[1] = 2, 0x81
			binary.BigEndian.PutUint32(b[4:], 3600)
			copy(b[24:], req[24:60])
			binary.BigEndian.PutUint16(b[42:], 666)
			ip := netip.AddrFrom16(forgedExt.As16()).As16()
			copy(b[44:], ip[:])
			g.rogueSend(rogue, b)
			return nil
		}
		c := newTestClient(t, g, clk, PCP)
		run(t, c, clk)
		if m, _ := c.Mapping(); m.External.Addr() != g.ext {
			t.Fatalf("mapping %v: the forgery was taken", m.External)
		}
		if n := c.Stats.WrongSource.Load(); n != 1 {
			t.Errorf("WrongSource = %d, want 1", n)
		}
	})
}

func TestProbeReportsWhatTheGatewayAnswers(t *testing.T) {
	for _, tc := range []struct{ pcp, pmp bool }{{true, true}, {false, true}, {false, false}} {
		clk := clock.NewFake(t0)
		g := newFakeGateway(t, clk, tc.pcp, tc.pmp)
		c := newTestClient(t, g, clk)
		c.opts.Attempts = 1
		c.opts.SSDPPort = g.port() // nothing answers SSDP there
		r, err := c.Probe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r.PCP != tc.pcp || r.NATPMP != tc.pmp || r.UPnP {
			t.Errorf("gateway pcp=%v pmp=%v: probe %+v", tc.pcp, tc.pmp, r)
		}
	}
}

func TestNoGatewayNoMapping(t *testing.T) {
	clk := clock.NewFake(t0)
	c := New(Options{Port: 41641, Clock: clk, AnnounceAddr: "127.0.0.1:0", Gateway: func() (netip.Addr, netip.Addr, error) {
		return netip.Addr{}, netip.Addr{}, errNoGateway
	}})
	run(t, c, clk)
	if _, ok := c.Mapping(); ok {
		t.Fatal("mapping without a gateway")
	}
	if next, _ := clk.Next(); next.Sub(clk.Now()) != retryMin {
		t.Errorf("retry in %v, want %v", next.Sub(clk.Now()), retryMin)
	}
}

// An announcement from the gateway (it restarted) refreshes the mapping at
// once, long before the renewal is due; one from another port does not.
func TestAnnouncementRemapsAtOnce(t *testing.T) {
	for _, p := range []Protocol{PCP, NATPMP} {
		t.Run(string(p), func(t *testing.T) {
			clk := clock.NewFake(t0)
			g := newFakeGateway(t, clk, p == PCP, true)
			c := newTestClient(t, g, clk, p)
			c.opts.Lifetime = 2 * time.Hour
			run(t, c, clk)
			wait.Until(t, "the announcement listener", func() bool { return c.annPort.Load() != 0 })
			clk.Advance(20 * time.Second)
			g.restart()
			var ann []byte
			if p == PCP {
				ann = make([]byte, 24)
				ann[0], ann[1] = 2, 0x80 // ANNOUNCE response, epoch 0
			} else {
				ann = make([]byte, 12)
				ann[1] = 128 // public address notification, epoch 0
				ip := g.ext.As4()
				copy(ann[8:], ip[:])
			}
			// From another port first: ignored and counted.
			rogue, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer rogue.Close()
			if _, err := rogue.WriteToUDPAddrPort(ann, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.annPort.Load()))); err != nil {
				t.Fatal(err)
			}
			wait.Until(t, "the forged announcement counted", func() bool { return c.Stats.WrongSource.Load() == 1 })
			if _, ok := g.mapped(41641); ok {
				t.Fatal("a forged announcement triggered a refresh")
			}
			g.announce(t, c, ann)
			// The refresh sees the restart's epoch (counted), asks again and
			// the gateway has the mapping again.
			wait.Until(t, "the restart's epoch seen", func() bool { return c.Stats.BadEpoch.Load() == 1 })
			wait.Until(t, "the mapping re-created", func() bool { _, ok := g.mapped(41641); return ok })
		})
	}
}
