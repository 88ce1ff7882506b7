package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/store/storetest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestServerKeyClaim: the first server key is recorded; the same key is
// accepted again, another is refused.
func TestServerKeyClaim(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		if err := s.ClaimServerKey(ctx, "key-a"); err != nil {
			t.Fatal(err)
		}
		if err := s.ClaimServerKey(ctx, "key-a"); err != nil {
			t.Fatalf("same key again: %v", err)
		}
		if err := s.ClaimServerKey(ctx, "key-b"); !errors.Is(err, ErrServerKeyMismatch) {
			t.Fatalf("another key: %v, want ErrServerKeyMismatch", err)
		}
	})
}

// TestReplicaOnlineState: a node online via a replica goes offline when
// that replica's heartbeat lapses, not while it beats; the end of a stream
// on a replica the node has left does not mark it offline; a replica that
// leaves takes its nodes offline; an online node is not deleted as an
// offline one.
func TestReplicaOnlineState(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Unix(1_000_000, 0).UnixNano())
	clk := func() time.Time { return time.Unix(0, now.Load()) }
	eachBackend(t, Options{Now: clk}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _ := must2(t)(s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true}))
		a := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("a"), "a", RegisterOptions{}))
		b := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("b"), "b", RegisterOptions{}))
		c := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("c"), "c", RegisterOptions{}))
		// d was online before there were replicas: it names none.
		d := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("d"), "d", RegisterOptions{}))
		must[struct{}](t)(struct{}{}, s.SetOnline(ctx, d.ID, true, clk()))
		for _, r := range []string{"r1", "r2", "r3"} {
			if err := s.Heartbeat(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		must[struct{}](t)(struct{}{}, s.SetOnlineVia(ctx, a.ID, "r1", clk()))
		must[struct{}](t)(struct{}{}, s.SetOnlineVia(ctx, b.ID, "r2", clk()))
		must[struct{}](t)(struct{}{}, s.SetOnlineVia(ctx, c.ID, "r3", clk()))
		online := func(id int64) bool { return must[*Node](t)(s.GetNode(ctx, id)).Online }
		now.Add(int64(3 * time.Second))
		s.Heartbeat(ctx, "r2")
		s.Heartbeat(ctx, "r3")
		if n := must[int64](t)(s.MarkLapsedOffline(ctx, 5*time.Second)); n != 1 || online(d.ID) || !online(a.ID) {
			t.Fatalf("%d nodes marked offline before any lapse, want only d (d online %v)", n, online(d.ID))
		}
		now.Add(int64(3 * time.Second)) // r1 6 s old, r2 and r3 3 s
		if n := must[int64](t)(s.MarkLapsedOffline(ctx, 5*time.Second)); n != 1 || online(a.ID) || !online(b.ID) {
			t.Fatalf("after r1 lapsed: %d marked, a online %v, b online %v", n, online(a.ID), online(b.ID))
		}
		if live := must[[]string](t)(s.LiveReplicas(ctx, 5*time.Second)); len(live) != 2 || live[0] != "r2" {
			t.Fatalf("live replicas %v", live)
		}
		// b moves to r3; r2's stream end must not take it offline.
		must[struct{}](t)(struct{}{}, s.SetOnlineVia(ctx, b.ID, "r3", clk()))
		if err := s.SetOfflineVia(ctx, b.ID, "r2", clk()); !errors.Is(err, ErrNotFound) || !online(b.ID) {
			t.Fatalf("stale stream end: %v, b online %v", err, online(b.ID))
		}
		// An ephemeral node's sweep deletes it only while it is offline.
		if err := s.DeleteOfflineNode(ctx, b.ID); !errors.Is(err, ErrNotFound) || !online(b.ID) {
			t.Fatalf("deleting online b: %v", err)
		}
		if err := s.LeaveReplicas(ctx, "r3"); err != nil || online(b.ID) || online(c.ID) {
			t.Fatalf("r3 left: %v, b online %v, c online %v", err, online(b.ID), online(c.ID))
		}
		if err := s.DeleteOfflineNode(ctx, b.ID); err != nil {
			t.Fatalf("deleting offline b: %v", err)
		}
		if _, err := s.GetNode(ctx, b.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("b after deletion: %v", err)
		}
	})
}

// TestPruneChangesByAge: the change log keeps what was logged within the
// last keep, and prunes what is older.
func TestPruneChangesByAge(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Unix(1_000_000, 0).UnixNano())
	clk := func() time.Time { return time.Unix(0, now.Load()) }
	eachBackend(t, Options{Now: clk}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _ := must2(t)(s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true}))
		a := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("a"), "a", RegisterOptions{}))
		old := must[int64](t)(s.LastChange(ctx))
		if err := s.PruneChangesOlderThan(ctx, time.Hour); err != nil { // sets the mark at old
			t.Fatal(err)
		}
		now.Add(int64(30 * time.Minute))
		s.SetOnline(ctx, a.ID, true, clk())
		if err := s.PruneChangesOlderThan(ctx, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, pruned, _ := s.Changes(ctx, 0, 100); pruned != 0 {
			t.Fatalf("pruned up to %d after 30 minutes", pruned)
		}
		now.Add(int64(31 * time.Minute))
		if err := s.PruneChangesOlderThan(ctx, time.Hour); err != nil {
			t.Fatal(err)
		}
		rows, pruned, err := s.Changes(ctx, 0, 100)
		if err != nil || pruned != old || len(rows) != 1 || rows[0].Seq <= old {
			t.Fatalf("after an hour: pruned %d (want %d), rows %+v, %v", pruned, old, rows, err)
		}
	})
}

func pgStore(t *testing.T) (*Store, string) {
	t.Helper()
	dsn := storetest.PostgresDSN(t)
	s := must[*Store](t)(Open(context.Background(), dsn, Options{}))
	t.Cleanup(func() { s.Close() })
	return s, dsn
}

// TestWatchChanges: a change logged through one store wakes the watcher
// of another on the same PostgreSQL database.
func TestWatchChanges(t *testing.T) {
	s, dsn := pgStore(t)
	other := must[*Store](t)(Open(context.Background(), dsn, Options{}))
	defer other.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wakes atomic.Int64
	done := make(chan struct{})
	go func() { s.WatchChanges(ctx, func() { wakes.Add(1) }, 50*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	wait.For(t, 10*time.Second, "the first wake on connecting", func() bool { return wakes.Load() >= 1 })
	before := wakes.Load()
	if _, err := other.CreateUser(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.SetPolicy(context.Background(), `{}`); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "a wake for the other store's change", func() bool { return wakes.Load() > before })
}

// TestDutiesMoveWhenTheHolderDies: of two stores competing for the
// duties one holds them; when its connection is gone the other takes
// them over.
func TestDutiesMoveWhenTheHolderDies(t *testing.T) {
	s, dsn := pgStore(t)
	other := must[*Store](t)(Open(context.Background(), dsn, Options{}))
	defer other.Close()
	var mu sync.Mutex
	held := map[string]bool{}
	run := func(name string, st *Store) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			st.HoldDuties(ctx, 100*time.Millisecond, func(h bool) { mu.Lock(); held[name] = h; mu.Unlock() })
			close(done)
		}()
		return func() { cancel(); <-done }
	}
	holders := func() (n int, who string) {
		mu.Lock()
		defer mu.Unlock()
		for k, v := range held {
			if v {
				n, who = n+1, k
			}
		}
		return
	}
	stopA := run("a", s)
	wait.For(t, 10*time.Second, "a holds the duties", func() bool { n, who := holders(); return n == 1 && who == "a" })
	stopB := run("b", other)
	defer stopB()
	for range 5 { // b keeps trying and does not get them
		time.Sleep(100 * time.Millisecond)
		if n, who := holders(); n != 1 || who != "a" {
			t.Fatalf("holders %d (%s) while a holds the duties", n, who)
		}
	}
	stopA() // closes a's connection, as the death of its process would
	wait.For(t, 10*time.Second, "b takes the duties over", func() bool { n, who := holders(); return n == 1 && who == "b" })
}

// TestLapsedSparesWireGuardMembers: a WireGuard-only member names no
// replica (its gateway reports it), so the lapse sweep must not take it
// offline while its gateway's replica beats (it did: on PostgreSQL the
// device flapped offline and mesh TestWireGuardDevice/postgres failed);
// when the gateway's replica lapses, the gateway and its devices go
// offline together.
func TestLapsedSparesWireGuardMembers(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Unix(1_000_000, 0).UnixNano())
	clk := func() time.Time { return time.Unix(0, now.Load()) }
	eachBackend(t, Options{Now: clk}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _ := must2(t)(s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true}))
		gw := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("gw"), "gw", RegisterOptions{}))
		phone := must[*Node](t)(s.AddWireGuardNode(ctx, WireGuardNode{UserID: u.ID, Name: "phone", Key: nodeKeyOf("phone"), Via: gw.ID}))
		if err := s.Heartbeat(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		must[struct{}](t)(struct{}{}, s.SetOnlineVia(ctx, gw.ID, "r1", clk()))
		must[struct{}](t)(struct{}{}, s.ReportWireGuard(ctx, gw.ID, []WireGuardReport{{ID: phone.ID, Online: true, LastHandshake: clk()}}))
		online := func(id int64) bool { return must[*Node](t)(s.GetNode(ctx, id)).Online }
		if _, err := s.MarkLapsedOffline(ctx, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if !online(gw.ID) || !online(phone.ID) {
			t.Fatalf("while r1 beats: gateway online %v, phone online %v; want both", online(gw.ID), online(phone.ID))
		}
		now.Add(int64(10 * time.Second))
		if _, err := s.MarkLapsedOffline(ctx, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if online(gw.ID) || online(phone.ID) {
			t.Fatalf("after r1 lapsed: gateway online %v, phone online %v; want neither", online(gw.ID), online(phone.ID))
		}
	})
}
