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

// TestPathEngineRoamsToAnotherNAT: a moves to another network mid-transfer
// (a laptop changing Wi-Fi). The direct path dies with the old mapping:
// the transfer moves to the relay within a missed heartbeat; losing the
// path makes a ask STUN again at once rather than at its next periodic
// refresh (stunEvery, 20 s), the peer is told the new address, and the
// next call-me-maybe punches a direct path from there. One session
// throughout.
func TestPathEngineRoamsToAnotherNAT(t *testing.T) {
	l := newEngineLab(t, easyNAT, easyNAT)
	l.a.sendData()
	l.delivered(l.a, l.b, 1)
	l.b.sendData()
	l.delivered(l.b, l.a, 1)
	if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	old := l.a.c.Discovered()
	handshakes := l.a.dev.Stats.HandshakesDone.Load() + l.b.dev.Stats.HandshakesDone.Load()

	newNAT := l.net.NewNAT(netip.MustParseAddr("198.18.0.9"), easyNAT)
	l.net.MoveHost(l.a.host, netip.MustParseAddr("10.0.9.2"), newNAT)
	moved := l.clk.Now()
	if bound := heartbeat + probeTick + missAfter; !l.run(bound, l.both(PathRelay)) {
		t.Fatalf("still a→b %s, b→a %s %v after the move", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a), bound)
	}
	fromA, fromB := l.a.sent.Load()+1, l.b.sent.Load()+1
	onRelay := l.clk.Now()
	// Losing the path makes a ask STUN again (at most every stunRetry),
	// and the call-me-maybe that follows carries the new address.
	if bound := stunRetry + 2*probeTick; !l.run(bound, l.both(PathDirect)) {
		t.Fatalf("not direct %v after falling back to the relay: a→b %s, b→a %s", bound, l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	t.Logf("on the relay for %v", l.since(onRelay))
	t.Logf("direct again %v after the move", l.since(moved))
	l.delivered(l.a, l.b, fromA)
	l.delivered(l.b, l.a, fromB)
	if d := l.a.c.Discovered(); len(d) != 1 || d[0].Addr() != newNAT.Public() {
		t.Fatalf("a discovered %v (before the move %v), want the new NAT's address", d, old)
	}
	if got := l.b.c.PeerPath(l.a.key).Addr; got.Addr() != newNAT.Public() {
		t.Fatalf("b's direct path to a is %v, want a's new address", got)
	}
	if now := l.a.dev.Stats.HandshakesDone.Load() + l.b.dev.Stats.HandshakesDone.Load(); now != handshakes {
		t.Fatalf("%d handshakes after the move, %d before", now, handshakes)
	}
}
