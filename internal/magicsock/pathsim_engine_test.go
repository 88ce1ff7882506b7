package magicsock

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// TestPathEngineSessionAcrossCut: with the WireGuard engine on top, one
// session — one handshake — carries a transfer from the direct path to
// the relay when the direct path is cut, and back to the direct path when
// it is restored, in virtual time: the engine never notices the moves.
func TestPathEngineSessionAcrossCut(t *testing.T) {
	l := newEngineLab(t, easyNAT, easyNAT)
	// WireGuard data messages (type 4) delivered over UDP to b's socket.
	var udpToB atomic.Int64
	bAddr := l.b.host.Addr()
	l.net.SetTap(func(_, dst netip.AddrPort, b []byte) {
		if dst.Addr() == bAddr && len(b) > 0 && b[0] == 4 {
			udpToB.Add(1)
		}
	})
	// The session first, one side at a time: two first initiations that
	// cross leave each side a responder waiting for the other, which
	// WireGuard resolves only at its retry (RekeyTimeout, 5 s) — the
	// protocol's behaviour, not what this test is about.
	l.a.sendData()
	l.delivered(l.a, l.b, 1)
	l.b.sendData()
	l.delivered(l.b, l.a, 1)
	if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	fromA := l.a.sent.Load() + 1
	l.run(3*time.Second, nil)
	l.delivered(l.a, l.b, fromA)
	handshakes := l.a.dev.Stats.HandshakesDone.Load() + l.b.dev.Stats.HandshakesDone.Load()
	if handshakes == 0 {
		t.Fatal("data flowed without a handshake?")
	}

	l.a.nat.SetBlocked(true)
	cut := l.clk.Now()
	if bound := heartbeat + probeTick + missAfter; !l.run(bound, l.both(PathRelay)) {
		t.Fatalf("still a→b %s, b→a %s %v after the cut", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a), bound)
	}
	t.Logf("on the relay %v after the cut", l.since(cut))
	fromA, fromB := l.a.sent.Load()+1, l.b.sent.Load()+1
	l.run(3*time.Second, nil)
	l.delivered(l.a, l.b, fromA)
	l.delivered(l.b, l.a, fromB)

	l.a.nat.SetBlocked(false)
	if bound := probeEvery + probeTick; !l.run(bound, l.both(PathDirect)) {
		t.Fatalf("not direct %v after the path came back: a→b %s, b→a %s", bound, l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	fromA = l.a.sent.Load() + 1
	before := udpToB.Load()
	l.run(time.Second, nil)
	l.delivered(l.a, l.b, fromA)
	if sent, direct := int64(l.a.sent.Load()-fromA+1), udpToB.Load()-before; direct < sent {
		t.Fatalf("back on the direct path, %d of %d data messages to b came over UDP", direct, sent)
	}
	if now := l.a.dev.Stats.HandshakesDone.Load() + l.b.dev.Stats.HandshakesDone.Load(); now != handshakes {
		t.Fatalf("%d handshakes after the moves, %d before: the session did not survive them", now, handshakes)
	}
}
