package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// exitPeer joins a node offering to be an exit node, approved.
func exitPeer(t *testing.T, td *testDaemon, name string) *peer {
	t.Helper()
	p := joinPeer(t, td.cs, name, exitRoutes...)
	td.cs.ApproveRoutes(p.pub(), exitRoutes, nil)
	waitPeerRoutes(t, td, name, exitRoutes)
	return p
}

func (td *testDaemon) setExit(pref string) {
	td.t.Helper()
	if _, err := td.d.SetRoutePrefs(td.t.Context(), localapi.RoutePrefs{ExitNode: &pref}); err != nil {
		td.t.Fatalf("--exit-node %q: %v", pref, err)
	}
}

// dnsUpstreams is where MagicDNS forwards what it does not answer.
func (td *testDaemon) dnsUpstreams() []netip.AddrPort {
	td.d.mu.Lock()
	defer td.d.mu.Unlock()
	if td.d.dns.res == nil {
		return nil
	}
	return td.d.dns.res.Config().Upstreams
}

// waitExit waits until the exit node in use is name ("" none) and the
// engine and table 52 say so: its default routes as allowed IPs and
// tunnel routes, or, with blocked, unreachable default routes.
func (td *testDaemon) waitExit(what, name string, p *peer, blocked bool) {
	td.t.Helper()
	waitFor(td.t, what+": exit node "+name, func() bool {
		rs := td.d.RouteStatus()
		return rs.CurrentExitNode == name && (rs.ExitBlocked != "") == blocked
	})
	if p != nil {
		td.waitPeer(what+": exit routes allowed", p.pub(), append(p.hosts(), exitRoutes...)...)
		td.waitRouter(what+": default routes via the tunnel", func(r *fakeRouter) bool {
			return equalPrefixes(r.tunnel, sorted(exitRoutes)) && len(r.unreachable) == 0
		})
		ip := td.d.RouteStatus().CurrentExitNodeIP
		waitFor(td.t, what+": DNS forwarded to the exit node", func() bool {
			return slices.Equal(td.dnsUpstreams(), []netip.AddrPort{netip.AddrPortFrom(ip, 53)})
		})
	}
	if blocked {
		td.waitRouter(what+": fail closed", func(r *fakeRouter) bool {
			return equalPrefixes(r.unreachable, sorted(exitRoutes)) && !slices.ContainsFunc(r.tunnel, func(p netip.Prefix) bool { return p.Bits() == 0 })
		})
		waitFor(td.t, what+": DNS not forwarded", func() bool { return len(td.dnsUpstreams()) == 0 })
		waitFor(td.t, what+": health says blocked", func() bool {
			return slices.ContainsFunc(td.d.Status().Health, func(h string) bool { return strings.Contains(h, "internet traffic blocked") })
		})
	}
}

func TestExitNodeNamed(t *testing.T) {
	cs := startServer(t)
	td := startDaemon(t, cs)
	td.router.get(func(r *fakeRouter) { r.hostDNS = []netip.Addr{netip.MustParseAddr("192.0.2.53")} })
	other := joinPeer(t, cs, "laptop")
	td.up("node")
	e1 := exitPeer(t, td, "exit1")

	// Not chosen: its default routes stay out of the engine.
	td.waitPeer("exit node unused", e1.pub(), e1.hosts()...)
	if _, err := td.d.SetRoutePrefs(t.Context(), localapi.RoutePrefs{ExitNode: new("laptop")}); err == nil {
		t.Fatal("--exit-node laptop (not an exit node) accepted")
	}

	td.setExit("exit1")
	td.waitExit("named", "exit1", e1, false)

	// Offline: kept (traffic waits for it), with a health line.
	e1.stop()
	waitFor(t, "offline exit node reported", func() bool {
		return slices.ContainsFunc(td.d.Status().Health, func(h string) bool { return strings.Contains(h, "exit1 is offline") })
	})
	td.waitExit("named offline", "exit1", e1, false)

	// Deleted: fail closed; the peers' own prefixes stay reachable in
	// table 52 in front of the unreachable defaults.
	cs.DeleteNode(e1.pub())
	td.waitExit("named deleted", "", nil, true)
	td.waitRouter("peers in front of the block", func(r *fakeRouter) bool {
		return !slices.ContainsFunc(other.hosts(), func(p netip.Prefix) bool { return !slices.Contains(r.tunnel, p) })
	})

	// Cleared: no block, DNS back to the host's resolvers.
	td.setExit("")
	td.waitExit("cleared", "", nil, false)
	td.waitRouter("no block", func(r *fakeRouter) bool { return len(r.unreachable) == 0 && len(r.tunnel) == 0 })
	waitFor(t, "DNS back to the host", func() bool {
		return slices.Equal(td.dnsUpstreams(), []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")})
	})
}

func TestExitNodeAuto(t *testing.T) {
	cs := startServer(t)
	td := startDaemon(t, cs)
	td.up("node")
	e1 := exitPeer(t, td, "exit1")
	e2 := exitPeer(t, td, "exit2")
	// exit2 answers probes faster.
	td.eng.setPath(e1.node(), magicsock.Path{Kind: magicsock.PathDirect, RTT: 50 * time.Millisecond})
	td.eng.setPath(e2.node(), magicsock.Path{Kind: magicsock.PathDirect, RTT: 5 * time.Millisecond})

	td.setExit("auto")
	td.waitExit("auto", "exit2", e2, false)
	td.waitPeer("the other exit node unused", e1.pub(), e1.hosts()...)

	// The one in use goes offline: the other takes over.
	e2.stop()
	td.waitExit("auto failover", "exit1", e1, false)
	td.waitPeer("the offline one unused", e2.pub(), e2.hosts()...)

	// None left: fail closed.
	e1.stop()
	td.waitExit("auto none", "", nil, true)

	// One comes back: used again.
	e2.start()
	td.waitExit("auto back", "exit2", e2, false)
}

// In auto mode an exit node that takes packets and sends none back for
// exitDeadAfter is dropped for another. The daemon's watcher runs on a
// fake clock: each step sets the exit node's counters, advances the clock
// to the watcher's next check and waits for the check to be done (its
// timer re-armed), so the silence is measured on virtual time.
func TestExitNodeAutoDeadPath(t *testing.T) {
	cs := startServer(t)
	fc := clock.NewFake(time.Now())
	td := startDaemonClock(t, cs, t.TempDir(), fc)
	td.up("node")
	e1 := exitPeer(t, td, "exit1")
	e2 := exitPeer(t, td, "exit2")
	td.eng.setPath(e1.node(), magicsock.Path{Kind: magicsock.PathDirect, RTT: 5 * time.Millisecond})
	td.eng.setPath(e2.node(), magicsock.Path{Kind: magicsock.PathDirect, RTT: 50 * time.Millisecond})
	td.setExit("auto")
	td.waitExit("auto", "exit1", e1, false)

	// watchArmed waits for the watcher's timer: the one due exitWatchEvery
	// from now (the endpoint loop's is 15 s away).
	watchArmed := func() {
		t.Helper()
		wait.Until(t, "the exit watcher's next check armed", func() bool {
			next, ok := fc.Next()
			return ok && next.Sub(fc.Now()) == exitWatchEvery
		})
	}
	// step runs the watcher's checks over d with the counters at tx, rx.
	step := func(d time.Duration, tx, rx uint64) {
		t.Helper()
		td.eng.setStats(e1.pub(), device.PeerStats{TxBytes: tx, RxBytes: rx})
		for done := time.Duration(0); done < d; done += exitWatchEvery {
			watchArmed()
			fc.Advance(exitWatchEvery)
		}
		watchArmed()
	}
	step(exitWatchEvery, 1000, 1000)
	step(time.Second, 2000, 2000) // answers: alive
	step(exitWatchEvery, 3000, 2000)
	step(exitDeadAfter, 4000, 2000) // silent for exactly exitDeadAfter: not yet
	if rs := td.d.RouteStatus(); rs.CurrentExitNode != "exit1" {
		t.Fatalf("silent for %v: switched to %q already", exitDeadAfter, rs.CurrentExitNode)
	}
	step(exitWatchEvery, 5000, 2000)
	if rs := td.d.RouteStatus(); rs.CurrentExitNode != "exit2" {
		t.Fatalf("silent for longer than %v: exit node %q, want exit2", exitDeadAfter, rs.CurrentExitNode)
	}
	td.waitExit("after a dead path", "exit2", e2, false)
}
