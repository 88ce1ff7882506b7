package server_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestEndpointFloodCoalesced: a node that reports its endpoints many times
// in a burst costs its peers at most one store write and one delta per
// EndpointInterval (the first at once), and the last report wins: nothing
// is lost at the end. On a fake clock, so the interval is exact and the
// test waits for no wall-clock second.
func TestEndpointFloodCoalesced(t *testing.T) {
	checkLeaks(t)
	fc := clock.NewFake(time.Now())
	e := newEnv(t, server.Options{PollInterval: time.Hour, Clock: fc})
	e.start()
	a := e.join("alpha", e.reuse, ap("192.0.2.1:41641"))
	var deltas atomic.Int64 // maps bravo applied
	b := e.joinWith("bravo", e.reuse, func(*netmap.NetworkMap) { deltas.Add(1) })
	alphaHas := func(what string, eps []netip.AddrPort) {
		t.Helper()
		b.waitMap(what, pushWait, func(m *netmap.NetworkMap) bool {
			p := peerByKey(m, a.key.PublicKey())
			return p != nil && p.Online && slices.Equal(p.Endpoints, eps)
		})
	}
	report := func(port int) []netip.AddrPort {
		t.Helper()
		eps := []netip.AddrPort{ap(fmt.Sprintf("192.0.2.1:%d", port))}
		if err := a.c.SetEndpoints(eps); err != nil {
			t.Fatal(err)
		}
		return eps
	}
	alphaHas("alpha online", []netip.AddrPort{ap("192.0.2.1:41641")})
	before := deltas.Load()
	alphaHas("alpha's first report, applied at once", report(10000))
	// The applier now waits one EndpointInterval of the fake clock (the
	// earliest timer: keepalives are 30 s away, the poll an hour).
	wait.For(t, pushWait, "the endpoint interval armed", func() bool {
		next, ok := fc.Next()
		return ok && next.Sub(fc.Now()) == server.DefaultEndpointInterval
	})
	const more = 99
	var last []netip.AddrPort
	for i := range more {
		last = report(10001 + i)
	}
	wait.For(t, pushWait, "every report received", func() bool { return e.srv.Stats().EndpointUpdates == more+1 })
	if st := e.srv.Stats(); st.EndpointWrites != 1 || st.EndpointsCoalesced != more-1 {
		t.Fatalf("within the interval: %d store writes, %d reports merged; want 1 and %d", st.EndpointWrites, st.EndpointsCoalesced, more-1)
	}
	fc.Advance(server.DefaultEndpointInterval)
	alphaHas("alpha's last report after the interval", last)
	if st := e.srv.Stats(); st.EndpointWrites != 2 {
		t.Fatalf("%d store writes for %d reports over one interval, want 2", st.EndpointWrites, st.EndpointUpdates)
	}
	if got := deltas.Load() - before; got != 2 {
		t.Fatalf("bravo applied %d maps for %d endpoint reports over one interval; want 2", got, more+1)
	}
}

// TestEndpointReportsKeptAtStreamEnd: with reports merged for an hour, a
// node's first report is written at once, the next ones wait, and the last
// is still written when its stream ends: nothing is lost.
func TestEndpointReportsKeptAtStreamEnd(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{PollInterval: time.Hour, EndpointInterval: time.Hour})
	e.start()
	a := e.join("alpha", e.reuse, ap("192.0.2.1:41641"))
	b := e.join("bravo", e.reuse)
	b.waitMap("alpha online", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, a.key.PublicKey())
		return p != nil && p.Online
	})
	seen := func(what string, online bool, eps []netip.AddrPort) {
		t.Helper()
		b.waitMap(what, pushWait, func(m *netmap.NetworkMap) bool {
			p := peerByKey(m, a.key.PublicKey())
			return p != nil && p.Online == online && slices.Equal(p.Endpoints, eps)
		})
	}
	report := func(port int) []netip.AddrPort {
		t.Helper()
		eps := []netip.AddrPort{ap(fmt.Sprintf("192.0.2.1:%d", port))}
		if err := a.c.SetEndpoints(eps); err != nil {
			t.Fatal(err)
		}
		return eps
	}
	seen("alpha's first report", true, report(10000))
	const more = 49
	var last []netip.AddrPort
	for i := range more {
		last = report(10001 + i)
	}
	if !wait.Poll(pushWait, func() bool { return e.srv.Stats().EndpointUpdates == more+1 }) {
		t.Fatalf("server received %d reports, want %d", e.srv.Stats().EndpointUpdates, more+1)
	}
	if st := e.srv.Stats(); st.EndpointWrites != 1 || st.EndpointsCoalesced != more-1 {
		t.Fatalf("within the interval: %d store writes, %d reports merged; want 1 and %d", st.EndpointWrites, st.EndpointsCoalesced, more-1)
	}
	a.stop()
	seen("alpha offline with its last report", false, last)
	n, err := e.st.GetNode(context.Background(), int64(a.self.ID))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{last[0].String()}; !slices.Equal(n.Endpoints, want) {
		t.Fatalf("stored endpoints %v, want %v", n.Endpoints, want)
	}
	if st := e.srv.Stats(); st.EndpointWrites != 2 {
		t.Fatalf("%d store writes for %d reports, want 2", st.EndpointWrites, st.EndpointUpdates)
	}
}
