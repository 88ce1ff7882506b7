package peerrelay

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/netsim"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// The relay on the virtual internet (package netsim): nodes are hosts on
// the internet talking to it directly, on one virtual clock.

var relayAddr = netip.MustParseAddrPort("198.18.50.1:3480")

type node struct {
	mu    sync.Mutex
	got   [][]byte // received, not yet taken by pending
	key   pubkey.Node
	disco noise.PrivateKey
	host  *netsim.Host
	fn    conn.ReceiveFunc
	relay conn.Endpoint
	clock uint64
}

type lab struct {
	t    *testing.T
	clk  *clock.Fake
	net  *netsim.Network
	srv  *Server
	rpub pubkey.Disco
}

func newLab(t *testing.T) *lab {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	l := &lab{t: t, clk: clk, net: netsim.New(clk)}
	rk := genKey(t)
	l.rpub = pubkey.Disco{PublicKey: rk.PublicKey()}
	l.srv = NewServer(l.net.NewHost(relayAddr.Addr(), nil), Options{DiscoKey: rk, Clock: clk})
	if _, err := l.srv.Start(relayAddr.Port()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.srv.Close() })
	return l
}

func genKey(t *testing.T) noise.PrivateKey {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (l *lab) newNode(i byte) *node {
	k := genKey(l.t)
	n := &node{key: pubkey.Node{PublicKey: k.PublicKey()}, disco: genKey(l.t)}
	n.host = l.net.NewHost(netip.AddrFrom4([4]byte{198, 18, 0, i}), nil)
	fns, _, err := n.host.Open(41641)
	if err != nil {
		l.t.Fatal(err)
	}
	n.fn = fns[0]
	l.t.Cleanup(func() { n.host.Close() })
	go n.read()
	n.relay, _ = n.host.ParseEndpoint(relayAddr.String())
	return n
}

func (n *node) client() Client {
	return Client{Key: n.key, Disco: pubkey.Disco{PublicKey: n.disco.PublicKey()}}
}

func (l *lab) send(n *node, b []byte) {
	l.t.Helper()
	if err := n.host.Send([][]byte{b}, n.relay); err != nil {
		l.t.Fatal(err)
	}
	wait.Until(l.t, "network idle", l.net.Idle)
}

// allocate sends n's allocation for peer and returns the answer (nil: none).
func (l *lab) allocate(n *node, peer pubkey.Node) *Allocated {
	l.t.Helper()
	n.clock++
	tx := NewTxID()
	shared := SharedKey(n.disco, l.rpub)
	l.send(n, Seal(pubkey.Disco{PublicKey: n.disco.PublicKey()}, shared, Message{Allocate: &Allocate{Tx: tx, From: n.key, Peer: peer, Clock: n.clock}}))
	for _, b := range l.pending(n) {
		if m, err := Open(b, shared); err == nil && m.Allocated != nil && m.Allocated.Tx == tx {
			return m.Allocated
		}
	}
	return nil
}

// read keeps what arrives on n's socket until it closes.
func (n *node) read() {
	for {
		bufs, sizes, eps := [][]byte{make([]byte, 2048)}, []int{0}, []conn.Endpoint{nil}
		k, err := n.fn(bufs, sizes, eps)
		if err != nil {
			return
		}
		n.mu.Lock()
		for i := range k {
			n.got = append(n.got, bufs[i][:sizes[i]])
		}
		n.mu.Unlock()
	}
}

// pending takes what n received (the network is idle: all of it).
func (l *lab) pending(n *node) [][]byte {
	wait.Until(l.t, "network idle", l.net.Idle)
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.got
	n.got = nil
	return out
}

// TestServerForwardsWithinSession: two allowed nodes get one session; data
// from each reaches the other unchanged, and nothing else does.
func TestServerForwardsWithinSession(t *testing.T) {
	l := newLab(t)
	a, b := l.newNode(1), l.newNode(2)
	l.srv.SetClients([]Client{a.client(), b.client()})
	ra := l.allocate(a, b.key)
	if ra == nil || ra.Status != StatusOK || ra.PeerBound {
		t.Fatalf("a's allocation: %+v", ra)
	}
	rb := l.allocate(b, a.key)
	if rb == nil || rb.Status != StatusOK || !rb.PeerBound || rb.Session != ra.Session {
		t.Fatalf("b's allocation: %+v (a's session %x)", rb, ra.Session)
	}
	msg := AppendData(nil, ra.Session, []byte{4, 0, 0, 0, 'h', 'i'})
	l.send(a, msg)
	got := l.pending(b)
	if len(got) != 1 || string(got[0]) != string(msg) {
		t.Fatalf("b got %q, want %q", got, msg)
	}
	if l.srv.Stats.Forwarded.Load() != 1 {
		t.Fatalf("forwarded %d", l.srv.Stats.Forwarded.Load())
	}
}

// TestServerDropsUnknownSources: data for sessions the relay does not
// have, data for a real session from a third address, control messages
// sealed with keys the relay does not serve, replays and garbage: all
// dropped and counted, none forwarded; a source flooding them is rate
// limited (at one instant of the virtual clock it gets ratelimit.Burst
// packets looked at, the rest are counted and dropped unopened).
func TestServerDropsUnknownSources(t *testing.T) {
	l := newLab(t)
	a, b, m := l.newNode(1), l.newNode(2), l.newNode(3)
	l.srv.SetClients([]Client{a.client(), b.client()})
	ra := l.allocate(a, b.key)
	if l.allocate(b, a.key) == nil || ra == nil {
		t.Fatal("allocation failed")
	}

	// m (not a client) sends data into a's session: not forwarded.
	l.send(m, AppendData(nil, ra.Session, []byte{4, 0, 0, 0, 'x'}))
	if l.srv.Stats.WrongSource.Load() != 1 || len(l.pending(b)) != 0 || len(l.pending(a)) != 0 {
		t.Fatalf("wrong source: counted %d", l.srv.Stats.WrongSource.Load())
	}
	// m asks for a session with a: its key is not served, no answer.
	if r := l.allocate(m, a.key); r != nil || l.srv.Stats.Unauthorized.Load() != 1 {
		t.Fatalf("allocation from a node not allowed: %+v, unauthorized %d", r, l.srv.Stats.Unauthorized.Load())
	}
	// a replays an old clock: not answered.
	a.clock -= 2
	if r := l.allocate(a, b.key); r != nil || l.srv.Stats.Replayed.Load() != 1 {
		t.Fatalf("replayed allocation answered: %+v", r)
	}
	// a asks for a session with m, whom the policy does not allow here.
	a.clock += 10
	if r := l.allocate(a, m.key); r == nil || r.Status != StatusRefused {
		t.Fatalf("allocation for a peer not allowed: %+v", r)
	}

	// A flood of data for unknown sessions from one source.
	const flood = 100
	for i := range flood {
		l.send(m, AppendData(nil, uint64(i)+1<<40, []byte{4, 0, 0, 0}))
	}
	if n := l.srv.Stats.UnknownSession.Load(); n != flood {
		t.Fatalf("unknown session counted %d, want %d", n, flood)
	}
	if n := l.srv.Stats.RateLimited.Load(); n < flood/2 {
		t.Fatalf("rate limited %d of %d at one instant", n, flood)
	}
	// Rate limited, m's control messages are not even opened.
	before := l.srv.Stats.Unauthorized.Load()
	l.allocate(m, a.key)
	if l.srv.Stats.Unauthorized.Load() != before {
		t.Fatal("a rate-limited source's control message was opened")
	}
	l.send(m, []byte("garbage that is neither"))
	if l.srv.Stats.Malformed.Load() != 1 {
		t.Fatal("garbage not counted")
	}
	if l.srv.Stats.Forwarded.Load() != 0 || len(l.pending(a))+len(l.pending(b)) != 0 {
		t.Fatal("something was forwarded")
	}
	// a's and b's own traffic is not affected by m's flood.
	l.send(a, AppendData(nil, ra.Session, []byte{4, 0, 0, 0, 'o', 'k'}))
	if len(l.pending(b)) != 1 {
		t.Fatal("a's data did not reach b during m's flood")
	}
}

// TestServerSideIdle: a side not refreshed for SideIdle is unbound; data
// towards it is dropped and counted.
func TestServerSideIdle(t *testing.T) {
	l := newLab(t)
	a, b := l.newNode(1), l.newNode(2)
	l.srv.SetClients([]Client{a.client(), b.client()})
	l.allocate(a, b.key)
	l.allocate(b, a.key)
	l.clk.Advance(SideIdle / 2)
	ra := l.allocate(a, b.key) // a refreshes, b does not
	l.clk.Advance(SideIdle / 2)
	if r := l.allocate(a, b.key); r == nil || r.PeerBound || r.Session != ra.Session {
		t.Fatalf("b's idle side still bound: %+v", r)
	}
	l.send(a, AppendData(nil, ra.Session, []byte{4, 0, 0, 0}))
	if l.srv.Stats.PeerUnbound.Load() != 1 || len(l.pending(b)) != 0 {
		t.Fatal("data to an idle side not dropped")
	}
}

func FuzzOpen(f *testing.F) {
	k := [32]byte{1}
	f.Add([]byte(ctlMagic + "0123456789012345678901234567890123456789012345678901234567890123456789"))
	f.Fuzz(func(t *testing.T, b []byte) {
		Open(b, &k)
		parse(b)
		if IsData(b) {
			DataSession(b)
		}
	})
}

// TestForwardLookupAllocatesNothing: finding where a data message goes
// (the per-packet work of the relay besides the send) allocates nothing.
func TestForwardLookupAllocatesNothing(t *testing.T) {
	l := newLab(t)
	a, b := l.newNode(1), l.newNode(2)
	l.srv.SetClients([]Client{a.client(), b.client()})
	ra := l.allocate(a, b.key)
	l.allocate(b, a.key)
	msg := AppendData(nil, ra.Session, make([]byte, 1400))
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, 1}), 41641)
	if l.srv.forward(msg, src) == nil {
		t.Fatal("no destination for a's data")
	}
	if n := testing.AllocsPerRun(1000, func() { l.srv.forward(msg, src) }); n != 0 {
		t.Fatalf("forward allocates %.1f times per packet", n)
	}
}
