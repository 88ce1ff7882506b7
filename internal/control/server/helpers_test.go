package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/controltest"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// env is a server on a real TCP listener over a SQLite store
// (controltest), with the names these tests use.
type env struct {
	*controltest.Server
	t     *testing.T
	st    *store.Store
	key   noise.PrivateKey
	opts  *server.Options
	srv   *server.Server
	user  *store.User
	reuse string // reusable auth key
	wrapL func(net.Listener) net.Listener
}

func newEnv(t *testing.T, opts server.Options) *env {
	t.Helper()
	cs := controltest.New(t, opts)
	return &env{Server: cs, t: t, st: cs.Store, key: cs.Key, opts: &cs.Opts, user: cs.User, reuse: cs.ReusableKey}
}

func (e *env) logged(sub string) bool { return e.Logged(sub) }

// start starts (or restarts, on the same address) the server.
func (e *env) start() {
	e.t.Helper()
	e.WrapListener = e.wrapL
	e.Start()
	e.srv = e.Server.Server()
}

func (e *env) stop() { e.Stop() }

func (e *env) url() string { return e.URL() }

// node is a running client.
type node struct {
	t      *testing.T
	key    noise.PrivateKey
	c      *client.Client
	self   *netmap.Node
	cancel context.CancelFunc
	done   chan error
	maps   atomic.Int64
	// onMap, if set before run, is called with each map too.
	onMap func(*netmap.NetworkMap)
}

func genKey(t *testing.T) noise.PrivateKey {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *env) client(key noise.PrivateKey, mapPath, url string) *client.Client {
	e.t.Helper()
	if url == "" {
		url = e.url()
	}
	c, err := client.New(client.Config{ServerURL: url, ServerKey: pubkey.Server{PublicKey: e.key.PublicKey()}, NodeKey: key, MapPath: mapPath,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: logtest.T(e.t).With("client", key.PublicKey().String()[:6])})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// join registers a new node with authKey and runs it.
func (e *env) join(hostname, authKey string, eps ...netip.AddrPort) *node {
	e.t.Helper()
	return e.joinVia(hostname, authKey, "", eps...)
}

// joinWith is join with a hook called with each map the node applies.
func (e *env) joinWith(hostname, authKey string, onMap func(*netmap.NetworkMap)) *node {
	e.t.Helper()
	return e.joinNode(&node{t: e.t, key: genKey(e.t), onMap: onMap}, hostname, authKey, "")
}

func (e *env) joinVia(hostname, authKey, url string, eps ...netip.AddrPort) *node {
	e.t.Helper()
	return e.joinNode(&node{t: e.t, key: genKey(e.t)}, hostname, authKey, url, eps...)
}

func (e *env) joinNode(n *node, hostname, authKey, url string, eps ...netip.AddrPort) *node {
	e.t.Helper()
	n.c = e.client(n.key, filepath.Join(e.t.TempDir(), "netmap.json"), url)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	self, err := n.c.Register(ctx, authKey, hostname, eps)
	if err != nil {
		e.t.Fatalf("register %s: %v", hostname, err)
	}
	n.self = self
	n.run()
	return n
}

func (n *node) run() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	onMap := n.onMap
	go func() {
		n.done <- n.c.Run(ctx, func(m *netmap.NetworkMap) {
			n.maps.Add(1)
			if onMap != nil {
				onMap(m)
			}
		})
	}()
	n.t.Cleanup(n.stop)
}

func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; !errors.Is(err, context.Canceled) {
		n.t.Errorf("Run returned %v", err)
	}
	n.cancel = nil
}

// pushWait bounds the waits for a change pushed to the nodes (a delta, a
// refusal): below the default 10 s poll of the store, with room for a
// loaded machine (CI runs packages in parallel on two cores).
const pushWait = 5 * time.Second

// waitMap waits until the node's map satisfies cond.
func (n *node) waitMap(what string, timeout time.Duration, cond func(*netmap.NetworkMap) bool) *netmap.NetworkMap {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := n.c.NetworkMap(); m != nil && cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("node %s: timed out after %v waiting for %s; map: %+v", n.self.Name, timeout, what, n.c.NetworkMap())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func peerKeys(m *netmap.NetworkMap) []noise.PublicKey {
	var ks []noise.PublicKey
	for _, p := range m.Peers {
		ks = append(ks, p.Key.PublicKey)
	}
	return ks
}

func hasPeers(nodes ...*node) func(*netmap.NetworkMap) bool {
	return func(m *netmap.NetworkMap) bool {
		if len(m.Peers) != len(nodes) {
			return false
		}
		for _, n := range nodes {
			if !slices.Contains(peerKeys(m), n.key.PublicKey()) {
				return false
			}
		}
		return true
	}
}

func peerByKey(m *netmap.NetworkMap, k noise.PublicKey) *netmap.Node {
	for i := range m.Peers {
		if m.Peers[i].Key.PublicKey == k {
			return &m.Peers[i]
		}
	}
	return nil
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// checkLeaks fails if goroutines outlive the test's shutdown.
func checkLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		// Runs after the other cleanups registered later (LIFO): servers
		// and clients are stopped by then.
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// slowProxy forwards TCP to the server and can stop forwarding the
// server's bytes to the client, like a client that stopped reading.
type slowProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	paused bool
	cond   *sync.Cond
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newSlowProxy(t *testing.T, target string) *slowProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{l: l, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			s.(*net.TCPConn).SetReadBuffer(4096)
			c.(*net.TCPConn).SetWriteBuffer(4096)
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(s, c); s.Close(); c.Close() }()
			go func() {
				defer p.wg.Done()
				defer c.Close()
				defer s.Close()
				buf := make([]byte, 512)
				for {
					p.mu.Lock()
					for p.paused {
						p.cond.Wait()
					}
					p.mu.Unlock()
					n, err := s.Read(buf)
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *slowProxy) setPaused(v bool) {
	p.mu.Lock()
	p.paused = v
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *slowProxy) close() {
	p.l.Close()
	p.setPaused(false)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// smallSendBuffer makes the server's sockets block early, so a client that
// stops reading fills its queue quickly.
type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return c, err
}
