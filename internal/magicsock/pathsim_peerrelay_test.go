package magicsock

import (
	"net/netip"
	"testing"

	"github.com/warrenmesh/warren/internal/peerrelay"
)

// Peer relays on the virtual internet: two nodes behind hard NATs (no
// direct path) and a node on the internet serving as their peer relay.

var peerRelayAddr = netip.MustParseAddrPort("198.18.50.1:3480")

type labPeerRelay struct {
	srv  *peerrelay.Server
	info PeerRelayInfo
}

// addPeerRelay starts a peer relay on a host of its own on the internet,
// serving the nodes allowed, and tells both nodes they may use it.
func (l *pathLab) addPeerRelay(allowed ...*labNode) *labPeerRelay {
	l.t.Helper()
	key, disco := genKeyT(l.t), genKeyT(l.t)
	h := l.net.NewHost(peerRelayAddr.Addr(), nil)
	srv := peerrelay.NewServer(h, peerrelay.Options{DiscoKey: disco, Clock: l.clk})
	if _, err := srv.Start(peerRelayAddr.Port()); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { srv.Close() })
	var clients []peerrelay.Client
	for _, n := range allowed {
		clients = append(clients, peerrelay.Client{Key: n.key, Disco: discoOf(n.disco)})
	}
	srv.SetClients(clients)
	r := &labPeerRelay{srv: srv, info: PeerRelayInfo{Key: nodeOf(key), Disco: discoOf(disco), Addr: peerRelayAddr}}
	for _, n := range []*labNode{l.a, l.b} {
		n.c.SetPeerRelays([]PeerRelayInfo{r.info})
	}
	return r
}

// TestPeerRelayCarriesHardHard: two hard NATs never go direct; with a
// peer relay both move off the TCP relay onto it, and the data arrive
// over UDP through it, unchanged (the relay forwards the sealed bytes).
func TestPeerRelayCarriesHardHard(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	r := l.addPeerRelay(l.a, l.b)
	start := l.clk.Now()
	if !l.run(callEvery+2*viaPending, l.both(PathPeerRelay)) {
		t.Fatalf("not on the peer relay after %v: a→b %s, b→a %s (relay: %d allocated, %d refused)", l.since(start),
			l.pathOf(l.a, l.b), l.pathOf(l.b, l.a), r.srv.Stats.Allocated.Load(), r.srv.Stats.Refused.Load())
	}
	t.Logf("on the peer relay after %v of virtual time", l.since(start))
	if p := l.a.c.PeerPath(l.b.key); p.Via != r.info.Key || p.Reason != ReasonProbesUnanswered {
		t.Fatalf("a→b via %v (reason %q), want the relay (%q)", p.Via, p.Reason, ReasonProbesUnanswered)
	}
	from := l.a.sent.Load() + 1
	fwd, tcpA, tcpB := r.srv.Stats.Forwarded.Load(), l.a.relay.Load(), l.b.relay.Load()
	l.run(2*viaRefresh, nil)
	l.delivered(l.a, l.b, from)
	l.delivered(l.b, l.a, from)
	if r.srv.Stats.Forwarded.Load() == fwd || l.b.c.Stats.PeerRelayRecv.Load() == 0 || l.a.c.Stats.PeerRelayRecv.Load() == 0 {
		t.Fatalf("the peer relay forwarded nothing (%d → %d)", fwd, r.srv.Stats.Forwarded.Load())
	}
	if l.a.relay.Load() != tcpA || l.b.relay.Load() != tcpB {
		t.Fatalf("data still came over the TCP relay: a %d→%d, b %d→%d", tcpA, l.a.relay.Load(), tcpB, l.b.relay.Load())
	}
	if n := r.srv.Sessions(); n != 1 {
		t.Fatalf("relay holds %d sessions, want 1", n)
	}

	// The relay node dies: both go back to the TCP relay, and data flow.
	r.srv.Close()
	start = l.clk.Now()
	if !l.run(2*viaTimeout, l.both(PathRelay)) {
		t.Fatalf("still %s/%s %v after the peer relay died", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a), l.since(start))
	}
	t.Logf("back on the TCP relay %v after the peer relay died", l.since(start))
	from = l.a.sent.Load() + 1
	l.run(probeTick, nil)
	l.delivered(l.a, l.b, from)
	l.delivered(l.b, l.a, from)
}

// TestPeerRelayRefusesNodeNotAllowed: the policy lets only a use the
// relay. a's allocation for b is refused (answered, so a stops asking for
// refusedFor), b's is not even opened (b is not a client: dropped and
// counted); both stay on the TCP relay, and data flow there.
func TestPeerRelayRefusesNodeNotAllowed(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	r := l.addPeerRelay(l.a)
	if l.run(callEvery+2*viaTimeout, func() bool {
		return l.pathOf(l.a, l.b) == PathPeerRelay || l.pathOf(l.b, l.a) == PathPeerRelay
	}) {
		t.Fatalf("a node the policy does not allow got a peer relay session")
	}
	if !l.both(PathRelay)() {
		t.Fatalf("paths a→b %s, b→a %s, want relay", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	if r.srv.Stats.Refused.Load() == 0 || l.a.c.Stats.PeerRelayRefused.Load() == 0 {
		t.Fatalf("a's allocation not refused (relay %d, a %d)", r.srv.Stats.Refused.Load(), l.a.c.Stats.PeerRelayRefused.Load())
	}
	if r.srv.Stats.Unauthorized.Load() == 0 {
		t.Fatal("b's allocation not counted as unauthorized")
	}
	if r.srv.Sessions() != 0 || r.srv.Stats.Allocated.Load() != 0 || r.srv.Stats.Forwarded.Load() != 0 {
		t.Fatalf("relay has %d sessions, allocated %d, forwarded %d", r.srv.Sessions(), r.srv.Stats.Allocated.Load(), r.srv.Stats.Forwarded.Load())
	}
	// a asked once, was refused, and does not ask again within refusedFor.
	if n := l.a.c.Stats.PeerRelayCtlSent.Load(); n != 1 {
		t.Fatalf("a sent %d allocations after a refusal, want 1", n)
	}
	l.delivered(l.a, l.b, 1)
	l.delivered(l.b, l.a, 1)
}

// TestPeerRelayRevoked: the policy changes while the session runs; the
// relay ends it at once and the nodes go back to the TCP relay.
func TestPeerRelayRevoked(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	r := l.addPeerRelay(l.a, l.b)
	if !l.run(callEvery+2*viaPending, l.both(PathPeerRelay)) {
		t.Fatalf("not on the peer relay: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	r.srv.SetClients([]peerrelay.Client{{Key: l.a.key, Disco: discoOf(l.a.disco)}})
	if r.srv.Sessions() != 0 {
		t.Fatal("the session outlived the policy that allowed it")
	}
	if !l.run(2*viaTimeout, l.both(PathRelay)) {
		t.Fatalf("still %s/%s after the policy changed", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	fwd := r.srv.Stats.Forwarded.Load()
	l.run(viaRefresh, nil)
	if r.srv.Stats.Forwarded.Load() != fwd {
		t.Fatal("the relay forwarded data after the policy changed")
	}
}

// TestPeerRelayDirectWins: where a direct path works, a peer relay the
// nodes may use does not replace it.
func TestPeerRelayDirectWins(t *testing.T) {
	l := newPathLab(t, easyNAT, easyNAT)
	l.addPeerRelay(l.a, l.b)
	if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	l.run(2*viaRefresh, nil)
	if !l.both(PathDirect)() {
		t.Fatalf("direct path left for %s/%s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
}

// TestPeerRelayKeptAcrossMaps: the daemon gives the layer its peer relays
// at every map it applies; the same relays again must not disturb the
// session (answers of the relay still count), so the pair stays on it.
func TestPeerRelayKeptAcrossMaps(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	r := l.addPeerRelay(l.a, l.b)
	if !l.run(callEvery+2*viaPending, l.both(PathPeerRelay)) {
		t.Fatalf("not on the peer relay: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	for _, n := range []*labNode{l.a, l.b} {
		n.c.SetPeerRelays([]PeerRelayInfo{r.info})
	}
	left := func() bool { return !l.both(PathPeerRelay)() }
	if l.run(3*viaTimeout, left) {
		t.Fatalf("left the peer relay after the same relays were set again: a→b %s, b→a %s (bad control messages: a %d, b %d)",
			l.pathOf(l.a, l.b), l.pathOf(l.b, l.a), l.a.c.Stats.PeerRelayBad.Load(), l.b.c.Stats.PeerRelayBad.Load())
	}
}

// TestPeerRelayRemovedFromMap: a map without the relay (unapproved, or
// the policy changed) moves the pair back to the TCP relay at once, and
// no allocation goes to it any more.
func TestPeerRelayRemovedFromMap(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	l.addPeerRelay(l.a, l.b)
	if !l.run(callEvery+2*viaPending, l.both(PathPeerRelay)) {
		t.Fatalf("not on the peer relay: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	for _, n := range []*labNode{l.a, l.b} {
		n.c.SetPeerRelays(nil)
	}
	l.run(probeTick, nil)
	if !l.both(PathRelay)() {
		t.Fatalf("paths a→b %s, b→a %s after the relay left the map, want relay", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	sent := l.a.c.Stats.PeerRelayCtlSent.Load() + l.b.c.Stats.PeerRelayCtlSent.Load()
	l.run(2*viaRefresh, nil)
	if n := l.a.c.Stats.PeerRelayCtlSent.Load() + l.b.c.Stats.PeerRelayCtlSent.Load(); n != sent {
		t.Fatalf("%d allocations sent to a relay no longer in the map", n-sent)
	}
	from := l.a.sent.Load() + 1
	l.run(probeTick, nil)
	l.delivered(l.a, l.b, from)
}
