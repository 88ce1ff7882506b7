package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// mesh is a control server and the admin API on one HTTP server, as
// `warren server` mounts them, with nodes joined through the real client.
type mesh struct {
	*env
	srv    *server.Server
	pub    noise.PublicKey
	url    string
	authKy string
}

func newMesh(t *testing.T) *mesh {
	e := &env{t: t}
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "warren.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	if e.key, _, err = st.CreateAPIKey(context.Background(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	sk, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	// A long poll: every change must arrive through notify.
	srv := server.New(st, sk, server.Options{PollInterval: time.Hour, Logger: logtest.T(t)})
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle(admin.Prefix, admin.New(st, func() { e.notified.Add(1); srv.Notify() }))
	e.hs = httptest.NewServer(mux)
	t.Cleanup(func() { e.hs.Close(); srv.Close() })
	m := &mesh{env: e, srv: srv, pub: sk.PublicKey(), url: e.hs.URL}
	e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
	var k admin.AuthKey
	e.must(201, &k, "POST", "/api/v1/authkeys", `{"user":"alice","reusable":true}`)
	m.authKy = k.Key
	return m
}

type runningNode struct {
	c    *client.Client
	self *netmap.Node
	key  noise.PublicKey
	done chan error
	stop context.CancelFunc
}

func (m *mesh) join(hostname string) *runningNode {
	m.t.Helper()
	nk, err := noise.GeneratePrivateKey()
	if err != nil {
		m.t.Fatal(err)
	}
	c, err := client.New(client.Config{ServerURL: m.url, ServerKey: pubkey.Server{PublicKey: m.pub}, NodeKey: nk,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: logtest.T(m.t)})
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	self, err := c.Register(ctx, m.authKy, hostname, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	n := &runningNode{c: c, self: self, key: nk.PublicKey(), done: make(chan error, 1), stop: stop}
	go func() { n.done <- c.Run(rctx, func(*netmap.NetworkMap) {}) }()
	m.t.Cleanup(func() { stop(); <-n.done })
	return n
}

// pushWait bounds the waits for a change to reach the nodes. Their server
// polls its store only hourly, so whatever arrives within it came through
// notify; the margin is for a loaded machine (CI runs packages in parallel
// on two cores).
const pushWait = 5 * time.Second

func peers(n *runningNode) map[uint64]netmap.Node {
	out := map[uint64]netmap.Node{}
	if m := n.c.NetworkMap(); m != nil {
		for _, p := range m.Peers {
			out[p.ID] = p
		}
	}
	return out
}

// refusal waits for the node's Run to end with a protocol error.
func refusal(t *testing.T, n *runningNode, within time.Duration) string {
	t.Helper()
	select {
	case err := <-n.done:
		n.done <- err // for the cleanup
		var pe *proto.Error
		if !errors.As(err, &pe) {
			t.Fatalf("Run ended with %v, want a protocol error", err)
		}
		return pe.Code
	case <-time.After(within):
		return ""
	}
}

// TestStreamsFollowAdminChanges checks, end to end, that what the admin API
// does reaches connected nodes through notify: a rename changes the peer,
// a deleted node vanishes from every map and its stream is closed with
// CodeNodeDeleted.
func TestStreamsFollowAdminChanges(t *testing.T) {
	m := newMesh(t)
	a, b, c := m.join("a"), m.join("b"), m.join("c")
	wait.For(t, pushWait, "full mesh", func() bool { return len(peers(a)) == 2 && len(peers(b)) == 2 && len(peers(c)) == 2 })

	m.must(200, nil, "PATCH", "/api/v1/nodes/b", `{"name":"bee"}`)
	wait.For(t, pushWait, "rename in a's map", func() bool { return peers(a)[b.self.ID].Name == "bee" })
	wait.For(t, pushWait, "rename in b's self", func() bool { nm := b.c.NetworkMap(); return nm != nil && nm.Self.Name == "bee" })

	m.must(204, nil, "DELETE", "/api/v1/nodes/bee", "")
	wait.For(t, pushWait, "deleted node gone from a and c", func() bool {
		_, inA := peers(a)[b.self.ID]
		_, inC := peers(c)[b.self.ID]
		return !inA && !inC
	})
	if code := refusal(t, b, pushWait); code != proto.CodeNodeDeleted {
		t.Fatalf("deleted node's stream: code %q, want %q", code, proto.CodeNodeDeleted)
	}
}

// TestStreamsFollowAdminExpire checks that expiring a connected node
// closes its stream with CodeNodeExpired, and that its peers see it as
// expired (they keep it in their maps, marked, and stop using it).
func TestStreamsFollowAdminExpire(t *testing.T) {
	m := newMesh(t)
	a, b := m.join("a"), m.join("b")
	wait.For(t, pushWait, "mesh", func() bool { return len(peers(a)) == 1 && len(peers(b)) == 1 })
	m.must(200, nil, "POST", fmt.Sprintf("/api/v1/nodes/%d/expire", b.self.ID), "")
	code := refusal(t, b, pushWait)
	if code != proto.CodeNodeExpired {
		t.Fatalf("expired node: stream ended with code %q (want %q)", code, proto.CodeNodeExpired)
	}
	wait.For(t, pushWait, "b marked expired in a's map", func() bool {
		p, ok := peers(a)[b.self.ID]
		return !ok || (!p.Expiry.IsZero() && !p.Expiry.After(time.Now()))
	})
}

// TestStreamsFollowUserRename checks that renaming a user reaches the
// User field of its nodes in every map.
func TestStreamsFollowUserRename(t *testing.T) {
	m := newMesh(t)
	a, b := m.join("a"), m.join("b")
	wait.For(t, pushWait, "mesh", func() bool { return len(peers(a)) == 1 && len(peers(b)) == 1 })
	m.must(200, nil, "PATCH", "/api/v1/users/alice", `{"name":"alicia"}`)
	wait.For(t, pushWait, "user rename in a's map", func() bool { return peers(a)[b.self.ID].User == "alicia" })
}
