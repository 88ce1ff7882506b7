package magicsock

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestJitter checks the RTT variation estimate of a direct path: steady
// RTTs keep it at zero, alternating ones move it 1/16 of the way to the
// difference per probe, and Path reports it with the RTT.
func TestJitter(t *testing.T) {
	now := time.Unix(1000, 0)
	clk := clock.NewFake(now)
	p := newPeerEP(&Conn{clock: clk}, pubkey.Node{PublicKey: noise.PublicKey{1}})
	addr := netip.MustParseAddrPort("198.18.1.2:41641")
	probe := func(rtt time.Duration) {
		tx := p.newPingLocked(addr, now)
		now = now.Add(rtt)
		if !p.pongLocked(tx, addr, now) {
			t.Fatal("pong not matched")
		}
		now = now.Add(time.Second - rtt)
	}
	for range 5 {
		probe(10 * time.Millisecond)
	}
	if j := p.cands[addr].jitter; j != 0 {
		t.Fatalf("steady RTT: jitter %v, want 0", j)
	}
	probe(26 * time.Millisecond) // |26-10| = 16 ms: jitter 1 ms
	if j := p.cands[addr].jitter; j != time.Millisecond {
		t.Fatalf("jitter %v, want 1ms", j)
	}
	for range 200 {
		probe(10 * time.Millisecond)
		probe(26 * time.Millisecond)
	}
	j := p.cands[addr].jitter
	if j < 15*time.Millisecond || j > 16*time.Millisecond {
		t.Fatalf("alternating 10/26 ms: jitter %v, want about 16ms", j)
	}
	p.mu.Lock()
	p.bestPing = time.Time{}
	p.mu.Unlock()
	// Path reads the layer's clock: bring it to the last pong.
	clk.Advance(now.Sub(clk.Now()))
	if path := p.Path(false, false); path.Kind != PathDirect || path.Jitter != j || path.RTT != 26*time.Millisecond {
		t.Fatalf("Path = %+v, want direct with jitter %v", path, j)
	}
}
