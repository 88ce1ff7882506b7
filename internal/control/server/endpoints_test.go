package server_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"warren/internal/control/server"
	"warren/internal/netmap"
	"warren/internal/testutil/wait"
)

// TestEndpointFloodCoalesced: a node that reports its endpoints many times
// in a burst costs its peers at most one delta per second of the burst
// (plus the first), and the last report wins: nothing is lost at the end.
func TestEndpointFloodCoalesced(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{PollInterval: time.Hour})
	e.start()
	a := e.join("alpha", e.reuse, ap("192.0.2.1:41641"))
	// bravo records when it applied each map.
	var mu sync.Mutex
	var applied []time.Time
	b := e.joinWith("bravo", e.reuse, func(*netmap.NetworkMap) {
		mu.Lock()
		applied = append(applied, time.Now())
		mu.Unlock()
	})
	b.waitMap("alpha online", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, a.key.PublicKey())
		return p != nil && p.Online && slices.Equal(p.Endpoints, []netip.AddrPort{ap("192.0.2.1:41641")})
	})
	mu.Lock()
	before := len(applied)
	mu.Unlock()
	const updates = 100
	var last []netip.AddrPort
	for i := range updates {
		last = []netip.AddrPort{ap(fmt.Sprintf("192.0.2.1:%d", 10000+i))}
		if err := a.c.SetEndpoints(last); err != nil {
			t.Fatal(err)
		}
	}
	b.waitMap("alpha's last endpoints", 2*pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, a.key.PublicKey())
		return p != nil && slices.Equal(p.Endpoints, last)
	})
	mu.Lock()
	got := applied[before:]
	mu.Unlock()
	// The server fans out at most one endpoint change of alpha per second:
	// over the span bravo saw them arrive, 1 + span/1s deltas (one more
	// for delivery jitter).
	span := got[len(got)-1].Sub(got[0])
	allowed := 2 + int(span/time.Second)
	t.Logf("%d endpoint reports: bravo applied %d deltas over %v (at most %d allowed)", updates, len(got), span, allowed)
	if len(got) > allowed {
		t.Fatalf("bravo applied %d deltas over %v for %d endpoint reports; want at most %d", len(got), span, updates, allowed)
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
