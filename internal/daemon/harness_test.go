package daemon

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/controltest"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// The daemon's in-process tests: a real Daemon with a fake engine and a
// fake router (fakes_test.go), against a real control server on loopback
// (controltest), and peers that are plain control clients. No root, no
// TUN, no namespace.

// waitLong bounds every wait for a change to travel server → daemon; the
// waits end as soon as the condition holds.
const waitLong = 5 * time.Second

type testDaemon struct {
	t      *testing.T
	d      *Daemon
	eng    *fakeEngine
	router *fakeRouter
	cs     *controltest.Server
	log    *logtest.Recorder // what the daemon logged
	stop   func()            // ends Run and waits for it
}

// startDaemon runs a daemon with fakes, in a fresh state directory.
func startDaemon(t *testing.T, cs *controltest.Server) *testDaemon {
	t.Helper()
	return startDaemonIn(t, cs, t.TempDir())
}

// startDaemonIn runs a daemon with fakes on the state in dir; stop ends
// it (the test's cleanup too).
func startDaemonIn(t *testing.T, cs *controltest.Server, dir string) *testDaemon {
	t.Helper()
	return startDaemonClock(t, cs, dir, nil)
}

// startDaemonClock is startDaemonIn with the daemon's periodic checks on
// clk (nil: the real clock).
func startDaemonClock(t *testing.T, cs *controltest.Server, dir string, clk clock.Clock) *testDaemon {
	t.Helper()
	return startDaemonWith(t, cs, dir, clk, nil)
}

// startDaemonWith is startDaemonClock with configure (when not nil)
// called on the daemon before it runs.
func startDaemonWith(t *testing.T, cs *controltest.Server, dir string, clk clock.Clock, configure func(*Daemon)) *testDaemon {
	t.Helper()
	log, rec := logtest.New()
	d, err := New(Config{StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "warren.sock"), TUN: "wtest0", Logger: log, Clock: clk, NoPortMap: true})
	if err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{t: t, d: d, eng: newFakeEngine(), router: &fakeRouter{}, cs: cs, log: rec}
	d.eng, d.router = td.eng, td.router
	d.backoff = 200 * time.Millisecond // reconnect at once when a test restarts the server
	if configure != nil {
		configure(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon: %v", err)
	}
	td.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("daemon: %v", err)
		}
	})
	t.Cleanup(td.stop)
	return td
}

// up joins the daemon with the server's reusable key.
func (td *testDaemon) up(hostname string) *localapi.Status {
	td.t.Helper()
	st, err := td.d.Up(context.Background(), localapi.UpRequest{ServerURL: td.cs.URL(), AuthKey: td.cs.ReusableKey, Hostname: hostname})
	if err != nil {
		td.t.Fatalf("up: %v", err)
	}
	td.waitState(localapi.StateRunning)
	return st
}

func (td *testDaemon) key() noise.PublicKey {
	td.d.mu.Lock()
	defer td.d.mu.Unlock()
	return td.d.key.PublicKey()
}

func (td *testDaemon) waitState(want string) {
	td.t.Helper()
	wait.For(td.t, waitLong, "state "+want, func() bool { return td.d.Status().BackendState == want })
}

// waitPeer waits until the engine holds peer k with exactly allowed.
func (td *testDaemon) waitPeer(what string, k noise.PublicKey, allowed ...netip.Prefix) {
	td.t.Helper()
	sortPrefixes(allowed)
	var got []netip.Prefix
	var ok bool
	if !wait.Poll(waitLong, func() bool {
		got, ok = td.eng.allowed(k)
		return ok && equalPrefixes(got, allowed)
	}) {
		td.t.Fatalf("%s: engine peer %s: allowed IPs %v (present %v), want %v", what, k.String()[:8], got, ok, allowed)
	}
}

// waitNoPeer waits until the engine does not hold peer k.
func (td *testDaemon) waitNoPeer(what string, k noise.PublicKey) {
	td.t.Helper()
	wait.For(td.t, waitLong, what, func() bool { _, ok := td.eng.allowed(k); return !ok })
}

// waitRouter waits until cond holds of the router's recorded state.
func (td *testDaemon) waitRouter(what string, cond func(r *fakeRouter) bool) {
	td.t.Helper()
	var ok bool
	if !wait.Poll(waitLong, func() bool { td.router.get(func(r *fakeRouter) { ok = cond(r) }); return ok }) {
		td.router.get(func(r *fakeRouter) {
			td.t.Fatalf("%s: router: addrs %v routes %v tunnel %v unreachable %v forwarding %v resolver %v %v",
				what, r.addrs, r.routes, r.tunnel, r.unreachable, r.forwarding, r.resolver, r.search)
		})
	}
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// peer is another node: a plain control client on the same server.
type peer struct {
	t      *testing.T
	key    noise.PrivateKey
	c      *client.Client
	self   *netmap.Node
	cancel context.CancelFunc
	done   chan error
}

// joinPeer registers a node advertising routes and keeps its map stream.
func joinPeer(t *testing.T, cs *controltest.Server, hostname string, routes ...netip.Prefix) *peer {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	dk, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{ServerURL: cs.URL(), ServerKey: pubkey.Server{PublicKey: cs.Key.PublicKey()}, NodeKey: k,
		DiscoKey: pubkey.Disco{PublicKey: dk.PublicKey()}, Routes: routes, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: logtest.T(t).With("peer", hostname)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	self, err := c.Register(ctx, cs.ReusableKey, hostname, []netip.AddrPort{netip.MustParseAddrPort("198.18.0.9:41641")})
	if err != nil {
		t.Fatalf("register %s: %v", hostname, err)
	}
	p := &peer{t: t, key: k, c: c, self: self}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *peer) pub() noise.PublicKey { return p.key.PublicKey() }

// node is the peer's key as the map and the path layer name it.
func (p *peer) node() pubkey.Node { return pubkey.Node{PublicKey: p.key.PublicKey()} }

func (p *peer) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan error, 1)
	go func() { p.done <- p.c.Run(ctx, func(*netmap.NetworkMap) {}) }()
}

// stop ends the peer's map stream (the server marks it offline).
func (p *peer) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel = nil
}

// host is the /32 or /128 of each of the peer's addresses.
func (p *peer) hosts() []netip.Prefix { return hostPrefixes(p.self.Addresses) }

func hostPrefixes(addrs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		out = append(out, netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
	}
	return out
}

func startServer(t *testing.T) *controltest.Server {
	return controltest.Start(t, server.Options{})
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// waitFor waits for cond (up to waitLong), failing the test naming what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, waitLong, what, cond)
}
