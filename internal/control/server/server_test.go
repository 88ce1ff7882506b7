package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"warren/internal/control/client"
	"warren/internal/control/controlbase"
	"warren/internal/control/proto"
	"warren/internal/control/server"
	"warren/internal/netmap"
	"warren/internal/noise"
	"warren/internal/store"
)

// env is a server on a real TCP listener over a SQLite store.
type env struct {
	t       *testing.T
	st      *store.Store
	key     noise.PrivateKey
	opts    server.Options
	srv     *server.Server
	hs      *httptest.Server
	addr    string
	user    *store.User
	reuse   string // reusable auth key
	wrapL   func(net.Listener) net.Listener
	logMu   sync.Mutex
	logs    []string
	stopped bool
}

func newEnv(t *testing.T, opts server.Options) *env {
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
	e := &env{t: t, st: st, key: key, opts: opts, user: u, reuse: reuse}
	t.Cleanup(func() {
		if t.Failed() {
			e.logMu.Lock()
			for _, l := range e.logs {
				t.Log("server: " + l)
			}
			e.logMu.Unlock()
		}
	})
	e.opts.Logf = func(f string, a ...any) {
		e.logMu.Lock()
		e.logs = append(e.logs, fmt.Sprintf(f, a...))
		e.logMu.Unlock()
	}
	return e
}

func (e *env) logged(sub string) bool {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	for _, l := range e.logs {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// start starts (or restarts, on the same address) the server.
func (e *env) start() {
	e.t.Helper()
	addr := e.addr
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
		e.t.Fatal(err)
	}
	e.addr = l.Addr().String()
	if e.wrapL != nil {
		l = e.wrapL(l)
	}
	e.srv = server.New(e.st, e.key, e.opts)
	e.hs = httptest.NewUnstartedServer(e.srv.Handler())
	e.hs.Listener = l
	e.hs.Start()
	e.stopped = false
	e.t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.stopped {
		return
	}
	e.stopped = true
	e.hs.Close()
	e.srv.Close()
}

func (e *env) url() string { return "http://" + e.addr }

// node is a running client.
type node struct {
	t      *testing.T
	key    noise.PrivateKey
	c      *client.Client
	self   *netmap.Node
	cancel context.CancelFunc
	done   chan error
	maps   atomic.Int64
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
	c, err := client.New(client.Config{ServerURL: url, ServerKey: e.key.PublicKey(), NodeKey: key, MapPath: mapPath,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logf: func(f string, a ...any) {
			e.t.Logf("client %s: "+f, append([]any{key.PublicKey().String()[:6]}, a...)...)
		}})
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

func (e *env) joinVia(hostname, authKey, url string, eps ...netip.AddrPort) *node {
	e.t.Helper()
	n := &node{t: e.t, key: genKey(e.t)}
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
	go func() { n.done <- n.c.Run(ctx, func(*netmap.NetworkMap) { n.maps.Add(1) }) }()
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
		ks = append(ks, p.Key)
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
		if m.Peers[i].Key == k {
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
		deadline := time.Now().Add(3 * time.Second)
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

func TestMeshJoinDeltaEndpoints(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{Domain: "mesh.test"})
	e.start()
	a := e.join("alpha", e.reuse, ap("192.0.2.1:41641"))
	b := e.join("bravo", e.reuse, ap("192.0.2.2:41641"))
	c := e.join("charlie", e.reuse)
	all := []*node{a, b, c}
	for _, n := range all {
		var others []*node
		for _, o := range all {
			if o != n {
				others = append(others, o)
			}
		}
		m := n.waitMap("the two other peers", 2*time.Second, hasPeers(others...))
		if m.Self.Key != n.key.PublicKey() || m.Self.ID != n.self.ID || m.Domain != "mesh.test" {
			t.Fatalf("%s: bad self/domain: %+v domain %q", n.self.Name, m.Self, m.Domain)
		}
		for _, o := range others {
			p := peerByKey(m, o.key.PublicKey())
			if !slices.Equal(p.Addresses, o.self.Addresses) || len(p.Addresses) != 2 {
				t.Fatalf("%s sees %s at %v, registered with %v", n.self.Name, o.self.Name, p.Addresses, o.self.Addresses)
			}
			if !p.Addresses[0].Addr().Is4() || p.Addresses[0].Bits() != 32 || !p.Addresses[1].Addr().Is6() || p.Addresses[1].Bits() != 128 {
				t.Fatalf("addresses %v: want a /32 and a /128", p.Addresses)
			}
			if !slices.Equal(p.AllowedIPs, p.Addresses) || p.Name != o.self.Name || p.User != "alice" {
				t.Fatalf("peer %+v", p)
			}
		}
	}
	// Registered endpoints and online state reach peers.
	c.waitMap("alpha's endpoint and online", 2*time.Second, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, a.key.PublicKey())
		return p != nil && p.Online && slices.Equal(p.Endpoints, []netip.AddrPort{ap("192.0.2.1:41641")})
	})

	// A fourth node joins: the others get it as a delta within 2 s.
	start := time.Now()
	d := e.join("delta", e.reuse)
	for _, n := range all {
		n.waitMap("the new node", 2*time.Second, func(m *netmap.NetworkMap) bool { return peerByKey(m, d.key.PublicKey()) != nil })
	}
	t.Logf("join reached 3 nodes in %v", time.Since(start))
	if m := a.c.NetworkMap(); m.Version <= 1 { // full maps are version 1: this came as a delta
		t.Fatalf("expected a delta-advanced map, version %d", m.Version)
	}
	d.waitMap("three peers", 2*time.Second, hasPeers(a, b, c))

	// An endpoint update from one node reaches the others.
	newEps := []netip.AddrPort{ap("198.51.100.7:5555"), ap("[2001:db8::7]:5555")}
	if err := b.c.SetEndpoints(newEps); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, c, d} {
		n.waitMap("bravo's new endpoints", 2*time.Second, func(m *netmap.NetworkMap) bool {
			p := peerByKey(m, b.key.PublicKey())
			return p != nil && slices.Equal(p.Endpoints, newEps)
		})
	}
	b.waitMap("own endpoints in self", 2*time.Second, func(m *netmap.NetworkMap) bool { return slices.Equal(m.Self.Endpoints, newEps) })

	// A node going offline shows up as offline; a deleted node disappears.
	c.stop()
	a.waitMap("charlie offline", 2*time.Second, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, c.key.PublicKey())
		return p != nil && !p.Online
	})
	if err := e.st.DeleteNode(context.Background(), int64(d.self.ID)); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	a.waitMap("delta removed", time.Second, func(m *netmap.NetworkMap) bool { return peerByKey(m, d.key.PublicKey()) == nil })
	// The deleted node's stream is refused and its Run returns.
	select {
	case err := <-d.done:
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Code != proto.CodeNodeDeleted {
			t.Fatalf("deleted node's Run returned %v", err)
		}
		d.cancel()
		d.cancel = nil
	case <-time.After(2 * time.Second):
		t.Fatal("deleted node's Run did not return")
	}
}

func TestOneOffKeyTwice(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	once, _, err := e.st.CreatePreAuthKey(context.Background(), e.user.ID, store.PreAuthKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.client(genKey(t), "", "").Register(ctx, once, "first", nil); err != nil {
		t.Fatal(err)
	}
	_, err = e.client(genKey(t), "", "").Register(ctx, once, "second", nil)
	var re *client.RegisterError
	if !errors.As(err, &re) || re.Code != proto.CodeAuthKeyUsed || !strings.Contains(err.Error(), "already been used") {
		t.Fatalf("second use of a one-off key: %v", err)
	}
	_, err = e.client(genKey(t), "", "").Register(ctx, "wkey_000000000000_nope", "third", nil)
	if !errors.As(err, &re) || re.Code != proto.CodeAuthKeyInvalid {
		t.Fatalf("unknown key: %v", err)
	}
	nodes, _ := e.st.ListNodes(ctx, 0)
	if len(nodes) != 1 {
		t.Fatalf("%d nodes stored, want 1", len(nodes))
	}
}

// raw sends a JSON body as one message.
func rawWrite(t *testing.T, c io.Writer, body string) {
	t.Helper()
	b := append([]byte{0, 0, 0, 0}, body...)
	n := len(body)
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestBoundToSessionKey(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	a := e.join("alpha", e.reuse, ap("192.0.2.1:1"))
	b := e.join("bravo", e.reuse, ap("192.0.2.2:2"))
	a.waitMap("bravo", 2*time.Second, hasPeers(b))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// An unregistered key cannot open a stream.
	mallory := genKey(t)
	conn, err := controlbase.Dial(ctx, e.url(), e.key.PublicKey(), mallory)
	if err != nil {
		t.Fatal(err)
	}
	rawWrite(t, conn, `{"v":1,"mapRequest":{"endpoints":[]}}`)
	m, err := proto.Read(conn, proto.MaxClientMessage)
	if err != nil || m.Error == nil || m.Error.Code != proto.CodeNotRegistered {
		t.Fatalf("unregistered map request: %+v %v", m, err)
	}
	conn.Close()

	// Registration naming bravo's key in the body registers the session's key.
	conn, err = controlbase.Dial(ctx, e.url(), e.key.PublicKey(), mallory)
	if err != nil {
		t.Fatal(err)
	}
	rawWrite(t, conn, fmt.Sprintf(`{"v":1,"registerRequest":{"authKey":%q,"hostname":"mallory","nodeKey":%q,"key":%q}}`,
		e.reuse, b.key.PublicKey(), b.key.PublicKey()))
	m, err = proto.Read(conn, proto.MaxClientMessage)
	if err != nil || m.RegisterResponse == nil || m.RegisterResponse.Node == nil {
		t.Fatalf("register: %+v %v", m, err)
	}
	if got := m.RegisterResponse.Node.Key; got != mallory.PublicKey() {
		t.Fatalf("registered key %v, want the session's %v", got, mallory.PublicKey())
	}
	// Then on a stream, an endpoint update naming bravo changes mallory only.
	rawWrite(t, conn, `{"v":1,"mapRequest":{"endpoints":[]}}`)
	if m, err = proto.Read(conn, proto.MaxClientMessage); err != nil || m.MapResponse == nil || m.MapResponse.Full == nil {
		t.Fatalf("full map: %+v %v", m, err)
	}
	if m.MapResponse.Full.Self.Key != mallory.PublicKey() {
		t.Fatal("full map for another node")
	}
	rawWrite(t, conn, fmt.Sprintf(`{"v":1,"endpointUpdate":{"endpoints":["203.0.113.66:666"],"nodeKey":%q,"id":%d}}`,
		b.key.PublicKey(), b.self.ID))
	a.waitMap("mallory's endpoint", 2*time.Second, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, mallory.PublicKey())
		return p != nil && slices.Equal(p.Endpoints, []netip.AddrPort{ap("203.0.113.66:666")})
	})
	if p := peerByKey(a.c.NetworkMap(), b.key.PublicKey()); !slices.Equal(p.Endpoints, []netip.AddrPort{ap("192.0.2.2:2")}) {
		t.Fatalf("bravo's endpoints changed by another session: %v", p.Endpoints)
	}
	stored, err := e.st.GetNodeByKey(ctx, b.key.PublicKey().String())
	if err != nil || !slices.Equal(stored.Endpoints, []string{"192.0.2.2:2"}) {
		t.Fatalf("bravo stored endpoints %v %v", stored, err)
	}

	// A malformed message and an oversized one are refused with an error.
	rawWrite(t, conn, `{"v":1,"endpointUpdate":{"endpoints":["not an endpoint"]}}`)
	for {
		m, err = proto.Read(conn, proto.MaxClientMessage)
		if err != nil {
			t.Fatalf("no refusal for a malformed message: %v", err)
		}
		if m.Error != nil {
			break
		}
	}
	if m.Error.Code != proto.CodeBadRequest {
		t.Fatalf("refusal %+v", m.Error)
	}
	conn.Close()
	conn, err = controlbase.Dial(ctx, e.url(), e.key.PublicKey(), mallory)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte{0, 0x10, 0, 0}) // 1 MiB claimed
	m, err = proto.Read(conn, proto.MaxClientMessage)
	if err != nil || m.Error == nil || !strings.Contains(m.Error.Message, "too large") {
		t.Fatalf("oversized message: %+v %v", m, err)
	}
	conn.Close()
}

func TestServerDownAndBack(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	a := e.join("alpha", e.reuse)
	b := e.join("bravo", e.reuse)
	last := a.waitMap("bravo online", 2*time.Second, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, b.key.PublicKey())
		return p != nil && p.Online
	})

	e.stop()
	time.Sleep(100 * time.Millisecond) // clients retry and fail meanwhile
	if m := a.c.NetworkMap(); m == nil || len(m.Peers) != 1 {
		t.Fatalf("map lost while the server is down: %+v", m)
	}
	// A new client instance (a restarted daemon) starts from the saved map.
	a.stop()
	a2 := e.client(a.key, a.c.Config().MapPath, "")
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *netmap.NetworkMap, 1)
	done := make(chan error, 1)
	go func() {
		done <- a2.Run(ctx, func(m *netmap.NetworkMap) {
			select {
			case got <- m:
			default:
			}
		})
	}()
	select {
	case m := <-got:
		if !m.Equal(a.c.NetworkMap()) || peerByKey(m, b.key.PublicKey()) == nil {
			t.Fatalf("loaded map %+v, want %+v", m, last)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no map from disk while the server is down")
	}
	a.c = a2
	a.cancel = cancel
	a.done = done

	// The server returns on the same store and address: clients resync and
	// a new change propagates. bravo stays away meanwhile and, although the
	// store still says online from the old process, is shown offline.
	b.stop()
	e.start()
	c := e.join("charlie", e.reuse)
	a.waitMap("charlie after the restart", 3*time.Second, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, c.key.PublicKey())
		return p != nil && p.Online
	})
	c.waitMap("both peers, bravo offline", 2*time.Second, func(m *netmap.NetworkMap) bool {
		pa, pb := peerByKey(m, a.key.PublicKey()), peerByKey(m, b.key.PublicKey())
		return len(m.Peers) == 2 && pa != nil && pa.Online && pb != nil && !pb.Online
	})
	// bravo comes back and everyone sees it online again.
	b.run()
	for _, n := range []*node{a, c} {
		n.waitMap("bravo back", 3*time.Second, func(m *netmap.NetworkMap) bool {
			p := peerByKey(m, b.key.PublicKey())
			return p != nil && p.Online
		})
	}
}

func TestEphemeralNodeRemovedAfterOffline(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{EphemeralGrace: 100 * time.Millisecond})
	e.start()
	eph, _, err := e.st.CreatePreAuthKey(context.Background(), e.user.ID, store.PreAuthKeyOptions{Reusable: true, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	a := e.join("alpha", e.reuse)
	x := e.join("ci-runner", eph)
	a.waitMap("the ephemeral node online", 2*time.Second, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, x.key.PublicKey())
		return p != nil && p.Online
	})
	time.Sleep(200 * time.Millisecond) // connected nodes are never removed
	if peerByKey(a.c.NetworkMap(), x.key.PublicKey()) == nil {
		t.Fatal("connected ephemeral node removed")
	}
	x.stop()
	a.waitMap("the ephemeral node removed", 2*time.Second, func(m *netmap.NetworkMap) bool { return len(m.Peers) == 0 })
	if _, err := e.st.GetNodeByKey(context.Background(), x.key.PublicKey().String()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ephemeral node still stored: %v", err)
	}
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

func TestSlowClientDoesNotDelayOthers(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{QueueSize: 8})
	e.wrapL = func(l net.Listener) net.Listener { return smallSendBuffer{l} }
	e.start()
	a := e.join("alpha", e.reuse)
	b := e.join("bravo", e.reuse)
	p := newSlowProxy(t, e.addr)
	slow := e.joinVia("slow", e.reuse, "http://"+p.l.Addr().String())
	slow.waitMap("two peers", 2*time.Second, hasPeers(a, b))
	b.waitMap("slow node", 2*time.Second, hasPeers(a, slow))

	p.setPaused(true)
	var final []netip.AddrPort
	for i := 0; i < 300; i++ {
		final = final[:0]
		for j := 0; j < 16; j++ {
			final = append(final, netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(j)}), uint16(1000+i)))
		}
		if err := a.c.SetEndpoints(final); err != nil {
			t.Fatal(err)
		}
	}
	b.waitMap("alpha's flood of endpoints", 10*time.Second, func(m *netmap.NetworkMap) bool {
		pa := peerByKey(m, a.key.PublicKey())
		return pa != nil && slices.Equal(pa.Endpoints, final)
	})
	deadline := time.Now().Add(2 * time.Second)
	for !e.logged("too slow") {
		if time.Now().After(deadline) {
			t.Fatal("the slow client's stream was not dropped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// With the slow client still stuck, one more change reaches the fast
	// node promptly.
	final = []netip.AddrPort{ap("192.0.2.99:9999")}
	start := time.Now()
	if err := a.c.SetEndpoints(final); err != nil {
		t.Fatal(err)
	}
	b.waitMap("alpha's last endpoint", 500*time.Millisecond, func(m *netmap.NetworkMap) bool {
		pa := peerByKey(m, a.key.PublicKey())
		return pa != nil && slices.Equal(pa.Endpoints, final)
	})
	t.Logf("a change reached the fast node in %v while the slow one is stuck", time.Since(start))
	// Once it reads again it reconnects and catches up with a full map.
	p.setPaused(false)
	start = time.Now()
	defer func() { t.Logf("slow node caught up in %v", time.Since(start)) }()
	slow.waitMap("alpha's last endpoints", 10*time.Second, func(m *netmap.NetworkMap) bool {
		pa := peerByKey(m, a.key.PublicKey())
		return pa != nil && slices.Equal(pa.Endpoints, final)
	})
}

func TestCloseDropsIdleConnections(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	e.start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := controlbase.Dial(ctx, e.url(), e.key.PublicKey(), genKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(50 * time.Millisecond) // the server is waiting for a request
	start := time.Now()
	e.stop()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v with an idle connection open", d)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Close")
	}
}
