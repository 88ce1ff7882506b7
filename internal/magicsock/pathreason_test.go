package magicsock

import (
	"net/netip"
	"testing"
	"time"
)

// Why a path is not direct, as status, netcheck and metrics show it: one
// test per reason, on the virtual internet of the path lab.

func (l *pathLab) reasonOf(from, to *labNode) PathReason { return from.c.PeerPath(to.key).Reason }

// TestPathReasonDirect: a direct path has no reason.
func TestPathReasonDirect(t *testing.T) {
	l := newPathLab(t, easyNAT, easyNAT)
	if !l.run(callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct: %s", l.pathOf(l.a, l.b))
	}
	if r := l.reasonOf(l.a, l.b); r != ReasonNone {
		t.Fatalf("direct path with reason %q", r)
	}
}

// TestPathReasonProbesUnanswered: two hard NATs drop each other's probes;
// the session stays on the relay, and the reason says the probes went
// unanswered (STUN answered, so UDP itself gets out).
func TestPathReasonProbesUnanswered(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	l.run(callEvery+2*probeEvery, nil)
	if !l.both(PathRelay)() {
		t.Fatalf("paths a→b %s, b→a %s, want relay", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
	for _, n := range []*labNode{l.a, l.b} {
		if r := l.reasonOf(n, n.other); r != ReasonProbesUnanswered {
			t.Fatalf("%s: reason %q, want %q", n.name, r, ReasonProbesUnanswered)
		}
	}
}

// TestPathReasonUDPBlocked: with UDP blocked at a's NAT its STUN server
// never answers; after udpBlockedAfter a says UDP is blocked, and once UDP
// is let through again the reason goes away with the first STUN answer.
func TestPathReasonUDPBlocked(t *testing.T) {
	l := newPathLab(t, easyNAT, easyNAT)
	l.a.nat.SetBlocked(true)
	l.run(udpBlockedAfter+probeTick, nil)
	if p := l.a.c.PeerPath(l.b.key); p.Kind != PathRelay || p.Reason != ReasonUDPBlocked {
		t.Fatalf("a→b %s (%q), want relay (%q)", p.Kind, p.Reason, ReasonUDPBlocked)
	}
	if r := l.reasonOf(l.b, l.a); r == ReasonUDPBlocked {
		t.Fatal("b's UDP is not blocked, its reason says it is")
	}
	l.a.nat.SetBlocked(false)
	if !l.run(stunRetry+callEvery+probeEvery, l.both(PathDirect)) {
		t.Fatalf("not direct after unblocking: a→b %s (%q)", l.pathOf(l.a, l.b), l.reasonOf(l.a, l.b))
	}
}

// TestPathReasonNoCandidate: a peer that reported no address and was
// never heard from has no candidate to probe.
func TestPathReasonNoCandidate(t *testing.T) {
	l := newPathLab(t, easyNAT, easyNAT)
	// No STUN: nobody learns an address, nothing is reported.
	l.a.c.SetSTUN(nil, nil)
	l.b.c.SetSTUN(nil, nil)
	l.run(2*probeEvery, nil)
	if p := l.a.c.PeerPath(l.b.key); p.Kind != PathRelay || p.Reason != ReasonNoCandidate {
		t.Fatalf("a→b %s (%q), want relay (%q)", p.Kind, p.Reason, ReasonNoCandidate)
	}
}

// TestPathReasonNoProbeKey: a peer without a disco key cannot be probed.
func TestPathReasonNoProbeKey(t *testing.T) {
	l := newPathLab(t, easyNAT, easyNAT)
	l.a.c.SetPeers([]PeerInfo{{Key: l.b.key, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.2:41641")}}})
	if p := l.a.c.PeerPath(l.b.key); p.Reason != ReasonNoProbeKey {
		t.Fatalf("a→b %s (%q), want %q", p.Kind, p.Reason, ReasonNoProbeKey)
	}
}

// TestPathReasonNotProbed: a peer reported at an address, not yet in use:
// nothing was pinged. Once data flows, its candidates are probed.
func TestPathReasonNotProbed(t *testing.T) {
	l := newPathLab(t, hardNAT, hardNAT)
	l.a.c.SetPeers([]PeerInfo{{Key: l.b.key, DiscoKey: discoOf(l.b.disco), Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.2:41641")}}})
	l.idle(time.Second)
	if p := l.a.c.PeerPath(l.b.key); p.Kind != PathRelay || p.Reason != ReasonNotProbed {
		t.Fatalf("a→b %s (%q), want relay (%q)", p.Kind, p.Reason, ReasonNotProbed)
	}
	l.run(probeEvery, nil)
	if r := l.reasonOf(l.a, l.b); r != ReasonProbesUnanswered {
		t.Fatalf("in use: reason %q, want %q", r, ReasonProbesUnanswered)
	}
}
