package server_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// trafficSeen records the distinct traffic values of one peer in the maps
// a node applies, in order.
type trafficSeen struct {
	id   uint64
	mu   sync.Mutex
	seen []netmap.Traffic
}

func (ts *trafficSeen) onMap(m *netmap.NetworkMap) {
	p, ok := m.Peer(ts.id)
	if !ok {
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if n := len(ts.seen); n == 0 || !ts.seen[n-1].Equal(p.Traffic) {
		ts.seen = append(ts.seen, p.Traffic)
	}
}

func (ts *trafficSeen) values() []netmap.Traffic {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]netmap.Traffic(nil), ts.seen...)
}

// addPhone adds a WireGuard-only member behind gw.
func addPhone(t *testing.T, e *env, gw *node) *store.Node {
	t.Helper()
	dev, err := e.st.AddWireGuardNode(context.Background(), store.WireGuardNode{UserID: e.user.ID, Name: "phone",
		Key: pubkey.Node{PublicKey: genKey(t).PublicKey()}, Via: int64(gw.self.ID)})
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// A gateway reporting its member's traffic every second for five virtual
// minutes changes the other members' maps at most once a TrafficInterval
// (six times at most, the first report at once); the last counters, held
// when the reports stop, go out when the interval has passed (by the
// server's timer, nothing else changing), so members end with the latest
// values and the time they were reported. The handshake is not held.
func TestWireGuardTrafficRateLimited(t *testing.T) {
	checkLeaks(t)
	fc := clock.NewFake(time.Now().Truncate(time.Second))
	e := newEnv(t, server.Options{Clock: fc, PollInterval: time.Hour, KeepAlive: time.Hour})
	e.start()
	ctx := context.Background()
	gw := e.join("gw", e.reuse)
	dev := addPhone(t, e, gw)
	ts := &trafficSeen{id: uint64(dev.ID)}
	other := e.joinWith("other", e.reuse, ts.onMap)
	other.waitMap("the phone in other's map", pushWait, func(m *netmap.NetworkMap) bool {
		_, ok := m.Peer(uint64(dev.ID))
		return ok
	})
	hs := fc.Now().Add(-time.Second).UTC()
	report := func(rx, tx int64, hs time.Time) {
		t.Helper()
		if err := e.st.ReportWireGuard(ctx, int64(gw.self.ID), []store.WireGuardReport{{ID: dev.ID, Online: true, LastHandshake: hs,
			RxBytes: rx, TxBytes: tx, At: fc.Now()}}); err != nil {
			t.Fatal(err)
		}
		if err := e.srv.SyncForTest(); err != nil {
			t.Fatal(err)
		}
	}
	const seconds = 300
	var lastAt time.Time
	for i := int64(1); i <= seconds; i++ {
		fc.Advance(time.Second)
		lastAt = fc.Now().UTC()
		report(1000*i, 2000*i, hs)
	}
	// A new handshake goes out at once, without the held counters.
	hs2 := fc.Now().UTC()
	report(1000*seconds, 2000*seconds, hs2)
	m := other.waitMap("the new handshake", pushWait, func(m *netmap.NetworkMap) bool {
		p, _ := m.Peer(uint64(dev.ID))
		return p.LastSeen.Equal(hs2)
	})
	if p, _ := m.Peer(uint64(dev.ID)); p.Traffic.RxBytes == 1000*seconds {
		t.Fatalf("the last counters went out with the handshake, less than an interval after the previous: %+v", p.Traffic)
	}
	// Nothing else happens: the server's timer publishes the held
	// counters when the interval has passed.
	wait.For(t, pushWait, "the server's timer for the held counters", func() bool {
		next, ok := fc.Next()
		return ok && next.Sub(fc.Now()) < server.DefaultTrafficInterval
	})
	next, _ := fc.Next()
	fc.Advance(next.Sub(fc.Now()))
	want := netmap.Traffic{RxBytes: 1000 * seconds, TxBytes: 2000 * seconds, At: lastAt}
	var seen []netmap.Traffic
	wait.For(t, pushWait, "other's maps reach the latest counters", func() bool {
		seen = ts.values()
		return len(seen) > 0 && seen[len(seen)-1].Equal(want)
	})
	if seen[0].IsZero() {
		seen = seen[1:] // before the first report
	}
	// Reports at 1..300 s: published at 1, 61, 121, 181, 241 and, held,
	// at 301.
	if len(seen) < 2 || len(seen) > 6 {
		t.Fatalf("other saw %d traffic values for %d reports over %d s (interval %v): %+v", len(seen), seconds, seconds, server.DefaultTrafficInterval, seen)
	}
	for i, v := range seen {
		if i > 0 && v.At.Sub(seen[i-1].At) <= 0 {
			t.Fatalf("traffic values out of order: %+v", seen)
		}
	}
	st := e.srv.Stats()
	if st.TrafficPublished != uint64(len(seen)) || st.TrafficHeld == 0 {
		t.Fatalf("stats: %d published, %d held; other saw %d values", st.TrafficPublished, st.TrafficHeld, len(seen))
	}
}

// Only a member's own gateway reports its traffic: a report for it on
// another node's stream changes neither the store nor any map.
func TestWireGuardTrafficOnlyFromGateway(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	ctx := context.Background()
	gw := e.join("gw", e.reuse)
	dev := addPhone(t, e, gw)
	ts := &trafficSeen{id: uint64(dev.ID)}
	other := e.joinWith("other", e.reuse, ts.onMap)
	liar := e.join("liar", e.reuse)
	liar.waitMap("liar's stream", pushWait, func(*netmap.NetworkMap) bool { return true })
	other.waitMap("the phone in other's map", pushWait, func(m *netmap.NetworkMap) bool {
		_, ok := m.Peer(uint64(dev.ID))
		return ok
	})
	if err := liar.c.SetWireGuard([]proto.WireGuardReport{{ID: uint64(dev.ID), Online: true, LastHandshake: time.Now().UTC(), RxBytes: 666, TxBytes: 666}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, pushWait, "the liar's report applied", func() bool { return e.srv.Stats().EndpointWrites >= 1 })
	if err := e.srv.SyncForTest(); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.GetNode(ctx, dev.ID); err != nil || n.RxBytes != 0 || n.TxBytes != 0 || !n.TrafficAt.IsZero() || n.Online {
		t.Fatalf("after another node's report: %+v %v", n, err)
	}
	// The gateway's report is taken.
	if err := gw.c.SetWireGuard([]proto.WireGuardReport{{ID: uint64(dev.ID), Online: true, LastHandshake: time.Now().UTC(), RxBytes: 5, TxBytes: 7}}); err != nil {
		t.Fatal(err)
	}
	other.waitMap("the gateway's counters", pushWait, func(m *netmap.NetworkMap) bool {
		p, _ := m.Peer(uint64(dev.ID))
		return p.Traffic.RxBytes == 5 && p.Traffic.TxBytes == 7 && !p.Traffic.At.IsZero()
	})
	for _, v := range ts.values() {
		if v.RxBytes == 666 || v.TxBytes == 666 {
			t.Fatalf("another node's report reached a map: %+v", ts.values())
		}
	}
}
