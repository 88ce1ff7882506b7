package server_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/store/storetest"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// replicaLab is several replicas (server.New with Options.Replica) on one
// PostgreSQL schema, each with its own store connection pool and HTTP
// listener, as separate processes would have.
type replicaLab struct {
	t       *testing.T
	dsn     string
	baseDSN string // without the application name
	app     string // the application name of the lab's sessions
	key     noise.PrivateKey
	st      *store.Store // the test's own connection
	reuse   string
	reps    []*replica
	relays  bool // replicas started from now on serve a relay (relayURLOf)
}

type replica struct {
	name string
	st   *store.Store
	srv  *server.Server
	hs   *httptest.Server
	down bool
}

func newReplicaLab(t *testing.T, n int) *replicaLab {
	t.Helper()
	dsn := storetest.PostgresDSN(t) // replicas need PostgreSQL
	// The replicas' sessions carry a name of their own, so a test can end
	// them (as a restart of PostgreSQL would) without touching others'.
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", fmt.Sprintf("warren_ha_%d_%d", os.Getpid(), appSeq.Add(1)))
	u.RawQuery = q.Encode()
	ctx := context.Background()
	l := &replicaLab{t: t, dsn: u.String(), baseDSN: dsn, app: q.Get("application_name"), key: genKey(t)}
	if l.st, err = store.Open(ctx, l.dsn, store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.st.Close() })
	user, err := l.st.CreateUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if l.reuse, _, err = l.st.CreatePreAuthKey(ctx, user.ID, store.PreAuthKeyOptions{Reusable: true}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.start(string(rune('a' + i)))
	}
	return l
}

func (l *replicaLab) start(name string) *replica {
	l.t.Helper()
	st, err := store.Open(context.Background(), l.dsn, store.Options{})
	if err != nil {
		l.t.Fatal(err)
	}
	r := &replica{name: name, st: st}
	var own *netmap.RelayRegion
	if l.relays {
		own = &netmap.RelayRegion{URL: relayURLOf(r), Key: pubkey.Relay{PublicKey: l.key.PublicKey()}}
	}
	r.srv = server.New(st, l.key, server.Options{Replica: "replica-" + name, ReplicaHeartbeat: 100 * time.Millisecond,
		ReplicaLapse: time.Second, PollInterval: time.Hour, ReplicaRelay: own, Logger: logtest.T(l.t).With("replica", name)})
	r.hs = httptest.NewServer(r.srv.Handler())
	l.reps = append(l.reps, r)
	l.t.Cleanup(r.stop)
	return r
}

// stop closes the replica's listener and connections and the server.
func (r *replica) stop() {
	if r.down {
		return
	}
	r.down = true
	r.hs.CloseClientConnections()
	r.hs.Close()
	r.srv.Close()
	r.st.Close()
}

// urls lists the replicas' URLs, starting with first's.
func (l *replicaLab) urls(first int) string {
	var s string
	for i := range l.reps {
		if s != "" {
			s += ","
		}
		s += l.reps[(first+i)%len(l.reps)].hs.URL
	}
	return s
}

// join registers a node through the replicas listed in urls and runs it.
func (l *replicaLab) join(hostname, urls string) *node {
	l.t.Helper()
	n := &node{t: l.t, key: genKey(l.t)}
	c, err := clientFor(l.t, l.key, n.key, urls)
	if err != nil {
		l.t.Fatal(err)
	}
	n.c = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n.self, err = n.c.Register(ctx, l.reuse, hostname, nil); err != nil {
		l.t.Fatalf("register %s: %v", hostname, err)
	}
	n.run()
	return n
}

func onlinePeer(n *node, name string) func(*netmap.NetworkMap) bool {
	return func(m *netmap.NetworkMap) bool {
		for _, p := range m.Peers {
			if p.Name == name && p.Online {
				return true
			}
		}
		return false
	}
}

func offlinePeer(name string) func(*netmap.NetworkMap) bool {
	return func(m *netmap.NetworkMap) bool {
		for _, p := range m.Peers {
			if p.Name == name {
				return !p.Online
			}
		}
		return false
	}
}

// TestReplicasShareTheWorld: nodes streaming from different replicas see
// each other online; a change written through one replica's store
// reaches the nodes of another (woken by NOTIFY, with its poll an hour
// away); a replica whose heartbeat lapses takes its nodes' online state
// with it; when the replica holding the duties goes away, its nodes fail
// over to another replica, which takes the duties over, and a node expiry
// set meanwhile fires.
func TestReplicasShareTheWorld(t *testing.T) {
	l := newReplicaLab(t, 2)
	a := l.join("a", l.urls(0))
	b := l.join("b", l.urls(1))
	c := l.join("c", l.urls(0))
	c.waitMap("a and b online", pushWait, func(m *netmap.NetworkMap) bool { return onlinePeer(c, "a")(m) && onlinePeer(c, "b")(m) })
	a.waitMap("b and c online", pushWait, func(m *netmap.NetworkMap) bool { return onlinePeer(a, "b")(m) && onlinePeer(a, "c")(m) })
	b.waitMap("a and c online", pushWait, func(m *netmap.NetworkMap) bool { return onlinePeer(b, "a")(m) && onlinePeer(b, "c")(m) })

	// A change through replica b reaches a, on replica a.
	ctx := context.Background()
	if err := l.reps[1].st.RenameNode(ctx, int64(b.self.ID), "bee"); err != nil {
		t.Fatal(err)
	}
	a.waitMap("b renamed bee", pushWait, onlinePeer(a, "bee"))

	// A node online on a replica that stops beating goes offline.
	g := l.join("ghost", l.urls(0))
	a.waitMap("ghost online", pushWait, onlinePeer(a, "ghost"))
	g.stop()
	a.waitMap("ghost offline", pushWait, offlinePeer("ghost"))
	if err := l.st.Heartbeat(ctx, "replica-dead"); err != nil {
		t.Fatal(err)
	}
	if err := l.st.SetOnlineVia(ctx, int64(g.self.ID), "replica-dead", time.Now()); err != nil {
		t.Fatal(err)
	}
	a.waitMap("ghost online via the dead replica", pushWait, onlinePeer(a, "ghost"))
	a.waitMap("ghost offline once the dead replica's heartbeat lapsed", pushWait, offlinePeer("ghost"))

	// The duty holder goes away.
	var holder, other *replica
	wait.For(t, pushWait, "one replica holding the duties", func() bool {
		h0, h1 := l.reps[0].srv.HoldsDuties(), l.reps[1].srv.HoldsDuties()
		if h0 == h1 {
			return false
		}
		holder, other = l.reps[0], l.reps[1]
		if h1 {
			holder, other = l.reps[1], l.reps[0]
		}
		return true
	})
	holder.stop()
	// An expiry set while no replica holds the duties.
	if err := other.st.SetNodeExpiry(ctx, int64(c.self.ID), time.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, pushWait, "the other replica taking the duties over", other.srv.HoldsDuties)
	for _, n := range []*node{a, b} {
		n.waitMap("every live peer online, through the surviving replica", pushWait, func(m *netmap.NetworkMap) bool {
			on := 0
			for _, p := range m.Peers {
				if p.Online {
					on++
				}
			}
			return on == 2
		})
	}
	if !wait.Poll(pushWait, func() bool { return other.srv.Stats().Resumes > 0 }) {
		t.Errorf("the nodes that failed over got full maps, not resume deltas: %+v", other.srv.Stats())
	}
	select {
	case err := <-c.done:
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Code != proto.CodeNodeExpired {
			t.Fatalf("c's stream ended with %v, want node_expired", err)
		}
		c.cancel = nil
	case <-time.After(pushWait + 2*time.Second):
		t.Fatal("c's expiry did not fire")
	}
}

var appSeq atomic.Int64

// dropSessions ends every database session of the lab (the replicas'
// pools, LISTEN and duty connections, the test's own), as a restart of
// PostgreSQL would, and returns how many it ended.
func (l *replicaLab) dropSessions() int {
	l.t.Helper()
	db, err := sql.Open("pgx", l.baseDSN)
	if err != nil {
		l.t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", l.app).Scan(&n); err != nil {
		l.t.Fatal(err)
	}
	return n
}

// TestReplicasRideOutADatabaseRestart: when every database session of the
// replicas ends at once (PostgreSQL restarted), they reconnect and a
// change made at once — while their LISTEN connections are down — still
// reaches the nodes of both, from the log, with the poll an hour away and
// without a full map to anyone.
func TestReplicasRideOutADatabaseRestart(t *testing.T) {
	l := newReplicaLab(t, 2)
	a := l.join("a", l.urls(0))
	b := l.join("b", l.urls(1))
	a.waitMap("b online", pushWait, onlinePeer(a, "b"))
	b.waitMap("a online", pushWait, onlinePeer(b, "a"))
	full := l.reps[0].srv.Stats().FullMapsSent + l.reps[1].srv.Stats().FullMapsSent
	for i, name := range []string{"a1", "a2"} {
		if n := l.dropSessions(); n < 4 { // at least each replica's LISTEN and duty connections
			t.Fatalf("ended %d sessions", n)
		}
		var err error
		if !wait.Poll(pushWait, func() bool { err = l.st.RenameNode(context.Background(), int64(a.self.ID), name); return err == nil }) {
			t.Fatalf("rename after the restart: %v", err)
		}
		b.waitMap(fmt.Sprintf("a renamed %s (restart %d)", name, i+1), pushWait, onlinePeer(b, name))
		a.waitMap(fmt.Sprintf("its own rename %s (restart %d)", name, i+1), pushWait, func(m *netmap.NetworkMap) bool { return m.Self.Name == name })
	}
	if got := l.reps[0].srv.Stats().FullMapsSent + l.reps[1].srv.Stats().FullMapsSent; got != full {
		t.Errorf("%d full maps sent across the restarts, want none", got-full)
	}
}

func clientFor(t *testing.T, serverKey, nodeKey noise.PrivateKey, urls string) (*client.Client, error) {
	return client.New(client.Config{ServerURL: urls, ServerKey: pubkey.Server{PublicKey: serverKey.PublicKey()}, NodeKey: nodeKey,
		MapPath: filepath.Join(t.TempDir(), "netmap.json"), MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: logtest.T(t).With("client", nodeKey.PublicKey().String()[:6])})
}
