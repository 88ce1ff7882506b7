package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

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
		m := n.waitMap("the two other peers", pushWait, hasPeers(others...))
		if m.Self.Key.PublicKey != n.key.PublicKey() || m.Self.ID != n.self.ID || m.Domain != "mesh.test" {
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
	c.waitMap("alpha's endpoint and online", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, a.key.PublicKey())
		return p != nil && p.Online && slices.Equal(p.Endpoints, []netip.AddrPort{ap("192.0.2.1:41641")})
	})

	// A fourth node joins: the others get it as a delta.
	start := time.Now()
	d := e.join("delta", e.reuse)
	for _, n := range all {
		n.waitMap("the new node", pushWait, func(m *netmap.NetworkMap) bool { return peerByKey(m, d.key.PublicKey()) != nil })
	}
	t.Logf("join reached 3 nodes in %v", time.Since(start))
	if m := a.c.NetworkMap(); m.Version <= 1 { // full maps are version 1: this came as a delta
		t.Fatalf("expected a delta-advanced map, version %d", m.Version)
	}
	d.waitMap("three peers", pushWait, hasPeers(a, b, c))

	// An endpoint update from one node reaches the others.
	newEps := []netip.AddrPort{ap("198.51.100.7:5555"), ap("[2001:db8::7]:5555")}
	if err := b.c.SetEndpoints(newEps); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, c, d} {
		n.waitMap("bravo's new endpoints", pushWait, func(m *netmap.NetworkMap) bool {
			p := peerByKey(m, b.key.PublicKey())
			return p != nil && slices.Equal(p.Endpoints, newEps)
		})
	}
	b.waitMap("own endpoints in self", pushWait, func(m *netmap.NetworkMap) bool { return slices.Equal(m.Self.Endpoints, newEps) })

	// A node going offline shows up as offline; a deleted node disappears.
	c.stop()
	a.waitMap("charlie offline", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, c.key.PublicKey())
		return p != nil && !p.Online
	})
	if err := e.st.DeleteNode(context.Background(), int64(d.self.ID)); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	a.waitMap("delta removed", pushWait, func(m *netmap.NetworkMap) bool { return peerByKey(m, d.key.PublicKey()) == nil })
	// The deleted node's stream is refused and its Run returns.
	select {
	case err := <-d.done:
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Code != proto.CodeNodeDeleted {
			t.Fatalf("deleted node's Run returned %v", err)
		}
		d.cancel()
		d.cancel = nil
	case <-time.After(pushWait):
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
	a.waitMap("bravo", pushWait, hasPeers(b))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// An unregistered key cannot open a stream.
	mallory := genKey(t)
	conn, err := noiseconn.Dial(ctx, e.url(), e.key.PublicKey(), mallory)
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
	conn, err = noiseconn.Dial(ctx, e.url(), e.key.PublicKey(), mallory)
	if err != nil {
		t.Fatal(err)
	}
	rawWrite(t, conn, fmt.Sprintf(`{"v":1,"registerRequest":{"authKey":%q,"hostname":"mallory","nodeKey":%q,"key":%q}}`,
		e.reuse, b.key.PublicKey(), b.key.PublicKey()))
	m, err = proto.Read(conn, proto.MaxClientMessage)
	if err != nil || m.RegisterResponse == nil || m.RegisterResponse.Node == nil {
		t.Fatalf("register: %+v %v", m, err)
	}
	if got := m.RegisterResponse.Node.Key.PublicKey; got != mallory.PublicKey() {
		t.Fatalf("registered key %v, want the session's %v", got, mallory.PublicKey())
	}
	// Then on a stream, an endpoint update naming bravo changes mallory only.
	rawWrite(t, conn, `{"v":1,"mapRequest":{"endpoints":[]}}`)
	if m, err = proto.Read(conn, proto.MaxClientMessage); err != nil || m.MapResponse == nil || m.MapResponse.Full == nil {
		t.Fatalf("full map: %+v %v", m, err)
	}
	if m.MapResponse.Full.Self.Key.PublicKey != mallory.PublicKey() {
		t.Fatal("full map for another node")
	}
	rawWrite(t, conn, fmt.Sprintf(`{"v":1,"endpointUpdate":{"endpoints":["203.0.113.66:666"],"nodeKey":%q,"id":%d}}`,
		b.key.PublicKey(), b.self.ID))
	a.waitMap("mallory's endpoint", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, mallory.PublicKey())
		return p != nil && slices.Equal(p.Endpoints, []netip.AddrPort{ap("203.0.113.66:666")})
	})
	if p := peerByKey(a.c.NetworkMap(), b.key.PublicKey()); !slices.Equal(p.Endpoints, []netip.AddrPort{ap("192.0.2.2:2")}) {
		t.Fatalf("bravo's endpoints changed by another session: %v", p.Endpoints)
	}
	stored, err := e.st.GetNodeByKey(ctx, pubkey.Node{PublicKey: b.key.PublicKey()})
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
	conn, err = noiseconn.Dial(ctx, e.url(), e.key.PublicKey(), mallory)
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
	last := a.waitMap("bravo online", pushWait, func(m *netmap.NetworkMap) bool {
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
	case <-time.After(pushWait):
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
	a.waitMap("charlie after the restart", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, c.key.PublicKey())
		return p != nil && p.Online
	})
	c.waitMap("both peers, bravo offline", pushWait, func(m *netmap.NetworkMap) bool {
		pa, pb := peerByKey(m, a.key.PublicKey()), peerByKey(m, b.key.PublicKey())
		return len(m.Peers) == 2 && pa != nil && pa.Online && pb != nil && !pb.Online
	})
	// bravo comes back and everyone sees it online again.
	b.run()
	for _, n := range []*node{a, c} {
		n.waitMap("bravo back", pushWait, func(m *netmap.NetworkMap) bool {
			p := peerByKey(m, b.key.PublicKey())
			return p != nil && p.Online
		})
	}
}

// TestEphemeralNodeRemovedAfterOffline: an ephemeral node stays while it
// is connected, however long (polls long past the grace change nothing),
// and is deleted once it has been offline for the grace. On a fake clock:
// the default grace of 2 minutes passes at once.
func TestEphemeralNodeRemovedAfterOffline(t *testing.T) {
	checkLeaks(t)
	fc := clock.NewFake(time.Now())
	e := newEnv(t, server.Options{Clock: fc})
	e.start()
	eph, _, err := e.st.CreatePreAuthKey(context.Background(), e.user.ID, store.PreAuthKeyOptions{Reusable: true, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	a := e.join("alpha", e.reuse)
	x := e.join("ci-runner", eph)
	a.waitMap("the ephemeral node online", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, x.key.PublicKey())
		return p != nil && p.Online
	})
	// Ten polls (10 s each) past the 2-minute grace: each reload sweeps.
	const poll = 10 * time.Second
	for range 10 + int(2*time.Minute/poll) {
		reads := storeReads(e.srv)
		fc.Advance(poll)
		wait.For(t, pushWait, "a reload of the world", func() bool { return storeReads(e.srv) > reads })
	}
	if _, err := e.st.GetNodeByKey(context.Background(), pubkey.Node{PublicKey: x.key.PublicKey()}); err != nil {
		t.Fatalf("connected ephemeral node deleted: %v", err)
	}
	if peerByKey(a.c.NetworkMap(), x.key.PublicKey()) == nil {
		t.Fatal("connected ephemeral node removed from alpha's map")
	}
	x.stop()
	a.waitMap("the ephemeral node offline", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, x.key.PublicKey())
		return p != nil && !p.Online
	})
	// Just short of the grace it stays.
	reads := storeReads(e.srv)
	fc.Advance(2*time.Minute - time.Second)
	wait.For(t, pushWait, "a reload of the world", func() bool { return storeReads(e.srv) > reads })
	if _, err := e.st.GetNodeByKey(context.Background(), pubkey.Node{PublicKey: x.key.PublicKey()}); err != nil {
		t.Fatalf("ephemeral node deleted before its grace passed: %v", err)
	}
	fc.Advance(2 * time.Second)
	a.waitMap("the ephemeral node removed", pushWait, func(m *netmap.NetworkMap) bool { return len(m.Peers) == 0 })
	if _, err := e.st.GetNodeByKey(context.Background(), pubkey.Node{PublicKey: x.key.PublicKey()}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ephemeral node still stored: %v", err)
	}
}

// storeReads counts the server's full reloads and node re-reads so far.
func storeReads(s *server.Server) uint64 {
	var n uint64
	for _, c := range s.Stats().StoreRead.Counts {
		n += c
	}
	return n
}

func TestSlowClientDoesNotDelayOthers(t *testing.T) {
	checkLeaks(t)
	// Endpoint reports are not rate limited here: alpha's flood must
	// become hundreds of deltas to overflow the slow stream's queue.
	e := newEnv(t, server.Options{QueueSize: 8, EndpointInterval: time.Microsecond})
	e.wrapL = func(l net.Listener) net.Listener { return smallSendBuffer{l} }
	e.start()
	a := e.join("alpha", e.reuse)
	b := e.join("bravo", e.reuse)
	p := newSlowProxy(t, e.Addr())
	slow := e.joinVia("slow", e.reuse, "http://"+p.l.Addr().String())
	slow.waitMap("two peers", pushWait, hasPeers(a, b))
	b.waitMap("slow node", pushWait, hasPeers(a, slow))

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
		// Each report its own delta (the server merges reports that
		// arrive while it writes the previous one).
		b.waitMap("alpha's flood of endpoints", 10*time.Second, func(m *netmap.NetworkMap) bool {
			pa := peerByKey(m, a.key.PublicKey())
			return pa != nil && slices.Equal(pa.Endpoints, final)
		})
		if e.logged("too slow") {
			break
		}
	}
	deadline := time.Now().Add(pushWait)
	for !e.logged("too slow") {
		if time.Now().After(deadline) {
			t.Fatal("the slow client's stream was not dropped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r, _ := e.Log.Find("too slow"); r.Level != slog.LevelWarn || r.Attrs["node"] == "" || r.Attrs["queued"] == "" {
		t.Fatalf("the dropped stream logged as %v", r)
	}
	// With the slow client still stuck, one more change reaches the fast
	// node promptly.
	final = []netip.AddrPort{ap("192.0.2.99:9999")}
	start := time.Now()
	if err := a.c.SetEndpoints(final); err != nil {
		t.Fatal(err)
	}
	// (Promptly: well within the 10 s write timeout a stuck stream could
	// hold a fanout for.)
	b.waitMap("alpha's last endpoint", 2*time.Second, func(m *netmap.NetworkMap) bool {
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
	conn, err := noiseconn.Dial(ctx, e.url(), e.key.PublicKey(), genKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(50 * time.Millisecond) // the server is waiting for a request
	start := time.Now()
	e.stop()
	if d := time.Since(start); d > 5*time.Second { // a handler waiting for the request would hold it 30 s
		t.Fatalf("Close took %v with an idle connection open", d)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Close")
	}
}

func TestFetchKey(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k, err := noiseconn.FetchKey(ctx, e.url())
	if err != nil {
		t.Fatal(err)
	}
	if k != e.srv.PublicKey().PublicKey {
		t.Fatalf("fetched %s, server key %s", k, e.srv.PublicKey())
	}
	if _, err := noiseconn.FetchKey(ctx, "ftp://x"); err == nil {
		t.Fatal("ftp URL accepted")
	}
}

// TestDiscoKeyReachesPeers: the probe key a node reports on its map stream
// is in its peers' maps (and changes reach them as a delta).
func TestDiscoKeyReachesPeers(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	b := e.join("bravo", e.reuse)
	disco := genKey(t).PublicKey()
	k := genKey(t)
	c := e.client(k, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	self, err := c.Register(ctx, e.reuse, "alpha", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Config()
	cfg.DiscoKey = pubkey.Disco{PublicKey: disco}
	c2, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &node{t: t, key: k, self: self, c: c2}
	a.run()
	b.waitMap("alpha's disco key", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(self.ID)
		return ok && p.DiscoKey.PublicKey == disco
	})
}
