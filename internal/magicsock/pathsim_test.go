package magicsock

import (
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netsim"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// Path-layer transitions on the virtual internet (see pathsim_lab_test.go):
// which NAT pairs get a direct path, and how a session moves between the
// direct path and the relay when UDP is blocked, unblocked or cut, in
// virtual time.

// delivered waits until to has received every data packet from sent
// since seq (through whichever path).
func (l *pathLab) delivered(from, to *labNode, since uint32) {
	l.t.Helper()
	last := from.sent.Load()
	wait.Until(l.t, "data from "+from.name+" delivered to "+to.name, func() bool {
		for s := since; s <= last; s++ {
			if !to.got(s) {
				return false
			}
		}
		return true
	})
}

// TestPathChoice: which NAT pairs end up direct, which stay on the relay.
// Direct needs one side's packets to get through the other's NAT once that
// NAT has sent towards them: an easy (endpoint-independent mapping) NAT on
// both sides, or an easy one letting in any port of an address it sent to
// facing a hard one. Two hard NATs, or a hard one facing a NAT filtering
// by address and port, never see each other's probes: the relay carries
// the session, every packet of it.
func TestPathChoice(t *testing.T) {
	easyByAddr := netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressDependent}
	for _, tc := range []struct {
		name       string
		natA, natB netsim.NATConfig
		direct     bool
	}{
		{"easy/easy", easyNAT, easyNAT, true},
		{"easy by address/hard", easyByAddr, hardNAT, true},
		{"hard/easy by address", hardNAT, easyByAddr, true},
		{"easy/hard", easyNAT, hardNAT, false},
		{"hard/hard", hardNAT, hardNAT, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newPathLab(t, tc.natA, tc.natB)
			start := l.clk.Now()
			if tc.direct {
				// STUN answers at the first tick; call-me-maybe through the
				// relay then makes both sides probe at once.
				if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
					t.Fatalf("not direct after %v: a→b %s, b→a %s", l.since(start), l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
				}
				t.Logf("direct after %v of virtual time", l.since(start))
				from := l.a.sent.Load() + 1
				before := l.b.direct.Load()
				l.run(time.Second, nil)
				l.delivered(l.a, l.b, from)
				if l.b.direct.Load() == before {
					t.Fatal("on a direct path, no data came over UDP")
				}
				return
			}
			anyDirect := func() bool { return l.pathOf(l.a, l.b) == PathDirect || l.pathOf(l.b, l.a) == PathDirect }
			if l.run(30*time.Second, anyDirect) {
				t.Fatalf("went direct after %v: a→b %s, b→a %s", l.since(start), l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
			}
			if !l.both(PathRelay)() {
				t.Fatalf("paths a→b %s, b→a %s, want relay", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
			}
			l.delivered(l.a, l.b, 1)
			l.delivered(l.b, l.a, 1)
			if l.a.nat.Filtered.Load()+l.b.nat.Filtered.Load() == 0 {
				t.Fatal("no probe was filtered: the NATs were never tried")
			}
			if d := l.a.direct.Load() + l.b.direct.Load(); d != 0 {
				t.Fatalf("%d data packets came over UDP through NATs that filter them", d)
			}
		})
	}
}

// TestPathBlockedUDPUsesRelayThenUpgrades: with UDP blocked at one side,
// the session runs over the relay; once unblocked, STUN (retrying every
// stunRetry) finds the address and the next probes move both sides to the
// direct path.
func TestPathBlockedUDPUsesRelayThenUpgrades(t *testing.T) {
	l := newPathLab(t, easyNAT, easyNAT)
	l.a.nat.SetBlocked(true)
	anyDirect := func() bool { return l.pathOf(l.a, l.b) == PathDirect || l.pathOf(l.b, l.a) == PathDirect }
	if l.run(20*time.Second, anyDirect) {
		t.Fatal("direct path through a NAT that blocks UDP")
	}
	if !l.both(PathRelay)() {
		t.Fatalf("paths a→b %s, b→a %s, want relay", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	if d := l.a.c.Discovered(); len(d) != 0 {
		t.Fatalf("STUN answered through a blocked NAT: %v", d)
	}
	l.delivered(l.a, l.b, 1)
	l.delivered(l.b, l.a, 1)
	if l.a.nat.Blocked.Load() == 0 {
		t.Fatal("nothing was blocked: the lab did not block UDP")
	}

	l.a.nat.SetBlocked(false)
	unblocked := l.clk.Now()
	bound := stunRetry + probeEvery + 2*probeTick
	if !l.run(bound, l.both(PathDirect)) {
		t.Fatalf("not direct %v after unblocking: a→b %s, b→a %s", bound, l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	t.Logf("direct %v after UDP was unblocked", l.since(unblocked))
	if d := l.a.c.Discovered(); len(d) != 1 || d[0].Addr() != l.a.nat.Public() {
		t.Fatalf("discovered %v, want a's NAT's address", d)
	}
}

// TestPathCutMidTransfer: a transfer on a direct path whose UDP is cut
// moves to the relay within one missed heartbeat (at most heartbeat +
// probeTick until the heartbeat goes out, missAfter until it counts as
// missed), every packet sent from then on arrives, and the session goes
// back to direct at the next probe once the path is restored.
func TestPathCutMidTransfer(t *testing.T) {
	l := newPathLab(t, easyNAT, easyNAT)
	if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	l.run(3*time.Second, nil) // a transfer on the direct path, heartbeats going
	l.delivered(l.a, l.b, 1)

	l.a.nat.SetBlocked(true)
	cut := l.clk.Now()
	bound := heartbeat + probeTick + missAfter
	if !l.run(bound, l.both(PathRelay)) {
		t.Fatalf("still a→b %s, b→a %s %v after the cut", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a), bound)
	}
	t.Logf("on the relay %v after the cut (bound %v)", l.since(cut), bound)
	fromA, fromB := l.a.sent.Load()+1, l.b.sent.Load()+1
	l.run(3*time.Second, nil)
	l.delivered(l.a, l.b, fromA) // nothing lost once on the relay
	l.delivered(l.b, l.a, fromB)
	if l.pathOf(l.a, l.b) != PathRelay {
		t.Fatalf("a→b %s while the direct path is cut", l.pathOf(l.a, l.b))
	}

	l.a.nat.SetBlocked(false)
	restored := l.clk.Now()
	bound = probeEvery + probeTick
	if !l.run(bound, l.both(PathDirect)) {
		t.Fatalf("not direct %v after the path came back: a→b %s, b→a %s", bound, l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	t.Logf("direct again %v after the path came back", l.since(restored))
	fromA = l.a.sent.Load() + 1
	before := l.b.direct.Load()
	l.run(time.Second, nil)
	l.delivered(l.a, l.b, fromA)
	if l.b.direct.Load() == before {
		t.Fatal("back on the direct path, no data came over UDP")
	}
}

// TestPathThroughForgetfulNATs: NATs that forget a flow 10 s after its
// last outgoing datagram. The probes of a transfer hold the direct path
// (and so the mappings) for two minutes; after the peers idle long enough
// for the NATs to forget each other, the path is no longer direct, and
// once data flows again the peers punch through again (a probe filtered
// on the way shows the NATs had forgotten).
func TestPathThroughForgetfulNATs(t *testing.T) {
	forgetful := easyNAT
	forgetful.Timeout = 10 * time.Second
	l := newPathLab(t, forgetful, forgetful)
	if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	start := l.clk.Now()
	notDirect := func() bool { return !l.both(PathDirect)() }
	if l.run(2*time.Minute, notDirect) {
		t.Fatalf("left the direct path %v into the transfer: a→b %s, b→a %s", l.since(start), l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}

	l.idle(activeFor + 2*forgetful.Timeout)
	if l.pathOf(l.a, l.b) == PathDirect {
		t.Fatal("still direct after idling: nothing proves the path any more")
	}
	resumed := l.clk.Now()
	filtered := l.a.nat.Filtered.Load() + l.b.nat.Filtered.Load()
	fromA := l.a.sent.Load() + 1
	if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct again after resuming: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	t.Logf("direct %v after the transfer resumed", l.since(resumed))
	l.delivered(l.a, l.b, fromA)
	if l.a.nat.Filtered.Load()+l.b.nat.Filtered.Load() == filtered {
		t.Fatal("no probe was filtered on resuming: the NATs had not forgotten the flow")
	}
}

// TestPathIdlePeersFallQuiet: once neither peer sends data, the layer
// stops probing within activeFor of the last packet. Peers that cannot go
// direct (two hard NATs) call each other through the relay while in use;
// a call received must not make the receiver "in use" in turn, or the two
// keep each other probing and calling for ever.
func TestPathIdlePeersFallQuiet(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	l.run(10*time.Second, nil)
	l.delivered(l.a, l.b, 1)
	l.idle(activeFor + probeTick)
	disco := func() uint64 { return l.a.c.Stats.DiscoSent.Load() + l.b.c.Stats.DiscoSent.Load() }
	before := disco()
	l.idle(time.Minute)
	if n := disco() - before; n != 0 {
		t.Fatalf("%d disco messages in a minute, %v after the last data", n, activeFor)
	}
}
