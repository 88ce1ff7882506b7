// Package controltest runs an in-process coordination server for tests:
// the real control server (package server) over a fresh SQLite store in a
// temporary directory, on a real TCP listener on loopback, with a server
// key, a user and a reusable auth key, and helpers to change what the
// nodes' maps are made of (policy, routes, expiry, deletion) and push the
// change to them. The control server's own tests and the daemon's tests
// use it.
package controltest

import (
	"context"
	"net"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// Server is a control server under test.
type Server struct {
	t     testing.TB
	Store *store.Store
	Key   noise.PrivateKey
	// Opts are the server's options; change them before Start. Their
	// Logger is replaced by one that keeps the records (Log, Logged),
	// printed when the test fails.
	Opts server.Options
	// Log holds what the server logged.
	Log *logtest.Recorder
	// User is the user nodes join as, with ReusableKey a reusable auth
	// key of theirs.
	User        *store.User
	ReusableKey string
	// WrapListener, if set before Start, wraps the server's listener.
	WrapListener func(net.Listener) net.Listener
	// WrapStore, if set before Start, wraps the store the server uses
	// (Store itself stays the real one, for the test's own reads and
	// writes).
	WrapStore func(server.Store) server.Store

	srv     *server.Server
	hs      *httptest.Server
	addr    string
	stopped bool
}

// New makes a server over a fresh SQLite store in a temporary directory;
// Start serves it.
func New(t testing.TB, opts server.Options) *Server {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "warren.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.CreateUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	reuse, _, err := st.CreatePreAuthKey(ctx, u.ID, store.PreAuthKeyOptions{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, Store: st, Key: key, Opts: opts, User: u, ReusableKey: reuse}
	s.Opts.Logger, s.Log = logtest.New()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("server log:\n" + s.Log.Text())
		}
	})
	return s
}

// Start is New and Start.
func Start(t testing.TB, opts server.Options) *Server {
	t.Helper()
	s := New(t, opts)
	s.Start()
	return s
}

// Logged reports whether the server logged a record whose message
// contains sub.
func (s *Server) Logged(sub string) bool {
	_, ok := s.Log.Find(sub)
	return ok
}

// Start starts (or restarts, on the same address) the server.
func (s *Server) Start() {
	s.t.Helper()
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old listener's port may linger briefly
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = l.Addr().String()
	if s.WrapListener != nil {
		l = s.WrapListener(l)
	}
	var st server.Store = s.Store
	if s.WrapStore != nil {
		st = s.WrapStore(st)
	}
	s.srv = server.New(st, s.Key, s.Opts)
	s.hs = httptest.NewUnstartedServer(s.srv.Handler())
	s.hs.Listener = l
	s.hs.Start()
	s.stopped = false
	s.t.Cleanup(s.Stop)
}

// Stop stops the server (Start starts it again).
func (s *Server) Stop() {
	if s.stopped || s.hs == nil {
		return
	}
	s.stopped = true
	s.hs.Close()
	s.srv.Close()
}

// Server is the running control server (a new one after each Start).
func (s *Server) Server() *server.Server { return s.srv }

// Addr is the server's HOST:PORT.
func (s *Server) Addr() string { return s.addr }

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.addr }

// AuthKey creates an auth key of User with o.
func (s *Server) AuthKey(o store.PreAuthKeyOptions) string {
	s.t.Helper()
	k, _, err := s.Store.CreatePreAuthKey(context.Background(), s.User.ID, o)
	if err != nil {
		s.t.Fatal(err)
	}
	return k
}

// Node is the stored node with key k.
func (s *Server) Node(k noise.PublicKey) *store.Node {
	s.t.Helper()
	n, err := s.Store.GetNodeByKey(context.Background(), pubkey.Node{PublicKey: k})
	if err != nil {
		s.t.Fatalf("node %s: %v", k, err)
	}
	return n
}

// SetPolicy installs a policy and pushes it to the nodes.
func (s *Server) SetPolicy(text string) {
	s.t.Helper()
	if _, err := s.Store.SetPolicy(context.Background(), text); err != nil {
		s.t.Fatal(err)
	}
	s.srv.Notify()
}

// ApproveRoutes approves (and unapproves) routes of the node with key k
// and pushes the change.
func (s *Server) ApproveRoutes(k noise.PublicKey, approve, unapprove []netip.Prefix) {
	s.t.Helper()
	if _, err := s.Store.ApproveRoutes(context.Background(), s.Node(k).ID, approve, unapprove); err != nil {
		s.t.Fatal(err)
	}
	s.srv.Notify()
}

// SetExpiry sets the key expiry of the node with key k and pushes it.
func (s *Server) SetExpiry(k noise.PublicKey, expiry time.Time) {
	s.t.Helper()
	if err := s.Store.SetNodeExpiry(context.Background(), s.Node(k).ID, expiry); err != nil {
		s.t.Fatal(err)
	}
	s.srv.Notify()
}

// DeleteNode deletes the node with key k and pushes it.
func (s *Server) DeleteNode(k noise.PublicKey) {
	s.t.Helper()
	if err := s.Store.DeleteNode(context.Background(), s.Node(k).ID); err != nil {
		s.t.Fatal(err)
	}
	s.srv.Notify()
}
