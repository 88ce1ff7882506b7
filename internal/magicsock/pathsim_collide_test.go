package magicsock

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/netsim"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// keepingNAT is a Linux router doing port-preserving masquerade without
// filtering its own input, one router (its ISP) away from the core: an
// unsolicited datagram to it is kept by conntrack as a flow to the router,
// and its host's own flow to that source is then given another port.
var keepingNAT = netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressPortDependent,
	KeepsUnsolicited: true, Hops: 1}

// runSending is run with only the given nodes sending data.
func (l *pathLab) runSending(senders []*labNode, d time.Duration, until func() bool) bool {
	l.t.Helper()
	for end := l.clk.Now().Add(d); l.clk.Now().Before(end); {
		for _, n := range senders {
			n.sendData()
		}
		l.settle()
		l.clk.Advance(probeTick)
		l.settle()
		if until != nil && until() {
			return true
		}
	}
	return false
}

// TestPathCollidingMappings (#19): two nodes behind NATs that keep
// unsolicited datagrams, with routers between the NATs. A probe that
// reaches the far NAT before it has a mapping for the flow would make that
// NAT give its host's flow towards us another port, and neither side would
// ever learn a port that works. The layer opens its own NAT with probes
// whose time to live ends before the far NAT and lets the peer (asked
// through the relay) send the first probe that crosses: direct within two
// probe rounds whichever side sends first, and no flow ever diverted.
// Where the NATs are adjacent no time to live separates them: the pair
// stays on the relay and the data flows there.
func TestPathCollidingMappings(t *testing.T) {
	for _, first := range []string{"a", "b", "both"} {
		t.Run(first+" first", func(t *testing.T) {
			l := newPathLab(t, keepingNAT, keepingNAT)
			l.idle(2 * probeTick) // STUN answers; nothing is probed yet
			senders := map[string][]*labNode{"a": {l.a}, "b": {l.b}, "both": {l.a, l.b}}[first]
			start := l.clk.Now()
			bound := 2*probeEvery + probeTick
			if !l.runSending(senders, bound, l.both(PathDirect)) {
				t.Fatalf("not direct %v after %s started sending: a→b %s, b→a %s (kept a %d b %d, diverted a %d b %d)",
					bound, first, l.pathOf(l.a, l.b), l.pathOf(l.b, l.a), l.a.nat.Kept.Load(), l.b.nat.Kept.Load(),
					l.a.nat.Diverted.Load(), l.b.nat.Diverted.Load())
			}
			t.Logf("direct after %v of virtual time", l.since(start))
			if d := l.a.nat.Diverted.Load() + l.b.nat.Diverted.Load(); d != 0 {
				t.Fatalf("%d flows diverted to another port", d)
			}
			if k := l.a.nat.Kept.Load() + l.b.nat.Kept.Load(); k != 0 {
				t.Fatalf("%d unsolicited datagrams kept by a NAT", k)
			}
			// The first to probe opens its NAT first (with both sending, the
			// other may get the call before its own round and need none).
			if l.a.c.Stats.DiscoOpening.Load()+l.b.c.Stats.DiscoOpening.Load() == 0 {
				t.Fatal("no opening probe was sent")
			}
			sender := senders[0]
			from := sender.sent.Load() + 1
			before := sender.other.direct.Load()
			l.runSending(senders, time.Second, nil)
			l.delivered(sender, sender.other, from)
			if sender.other.direct.Load() == before {
				t.Fatal("on a direct path, no data came over UDP")
			}
		})
	}
	t.Run("adjacent NATs", func(t *testing.T) {
		adjacent := keepingNAT
		adjacent.Hops = 0
		l := newPathLab(t, adjacent, adjacent)
		l.idle(2 * probeTick)
		anyDirect := func() bool { return l.pathOf(l.a, l.b) == PathDirect || l.pathOf(l.b, l.a) == PathDirect }
		if l.run(30*time.Second, anyDirect) {
			t.Fatalf("direct between adjacent keeping NATs: a→b %s, b→a %s", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
		}
		if !l.both(PathRelay)() {
			t.Fatalf("paths a→b %s, b→a %s, want relay", l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
		}
		l.delivered(l.a, l.b, 1)
		l.delivered(l.b, l.a, 1)
		if l.a.nat.Diverted.Load()+l.b.nat.Diverted.Load() == 0 {
			t.Fatal("no flow diverted: the NATs did not collide")
		}
	})
}

// downRelay is a relay that takes nothing (not connected).
type downRelay struct{}

func (downRelay) Send(pubkey.Node, []byte) error { return errors.New("relay: not connected") }

// TestPathRelayDownProbesFull: when the relay does not take the call, the
// layer cannot ask the peer to probe first, so it probes with a full time
// to live as before opening existed: two nodes behind NATs that filter
// their input (one router each towards the core, so opening probes would
// never arrive) go direct by probing each other.
func TestPathRelayDownProbesFull(t *testing.T) {
	filtering := easyNAT
	filtering.Hops = 1
	l := newPathLab(t, filtering, filtering)
	l.idle(2 * probeTick)
	l.a.c.SetRelay(downRelay{})
	l.b.c.SetRelay(downRelay{})
	bound := 2*probeEvery + probeTick
	if !l.run(bound, l.both(PathDirect)) {
		t.Fatalf("not direct %v with the relay down: a→b %s, b→a %s", bound, l.pathOf(l.a, l.b), l.pathOf(l.b, l.a))
	}
}

// takingRelay takes packets for one more node (a peer whose engine reads
// nothing from the relay) and drops them; the rest go to the lab's relay.
type takingRelay struct {
	Relay
	silent pubkey.Node
}

func (r takingRelay) Send(dst pubkey.Node, pkt []byte) error {
	if dst == r.silent {
		return nil
	}
	return r.Relay.Send(dst, pkt)
}

// TestPathDataReachesSilentPeerDirectly: a peer on the internet that
// answers no probe and reads nothing from the relay (a WireGuard engine
// without a path layer) gets a node's data directly once a call to it
// has settled, even when the data (the engine's handshake retries, every
// 5 s) keeps falling just after the node's calls (every 5 s too).
func TestPathDataReachesSilentPeerDirectly(t *testing.T) {
	l := newPathLab(t, keepingNAT, keepingNAT)
	l.idle(2 * probeTick)
	mKey, mDisco := nodeOf(genKeyT(t)), genKeyT(t)
	m := l.net.NewHost(netip.MustParseAddr("198.18.77.1"), nil)
	fns, port, err := m.Open(41641)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var got atomic.Int64
	go func() {
		bufs, sizes, eps := [][]byte{make([]byte, 1500)}, []int{0}, []conn.Endpoint{nil}
		for {
			n, err := fns[0](bufs, sizes, eps)
			if err != nil {
				return
			}
			if n == 1 && sizes[0] == 16 && bufs[0][0] == 4 {
				got.Add(1)
			}
		}
	}()
	l.a.c.SetRelay(takingRelay{Relay: memRelayClient{r: l.relay, from: l.a.key}, silent: mKey})
	l.a.c.SetPeers([]PeerInfo{{Key: mKey, DiscoKey: discoOf(mDisco), Endpoints: []netip.AddrPort{netip.AddrPortFrom(m.Addr(), port)}}})
	ep, err := l.a.c.ParseEndpoint(PeerEndpoint(mKey))
	if err != nil {
		t.Fatal(err)
	}
	send := func() {
		b := make([]byte, 16)
		b[0] = 4
		l.a.c.Send([][]byte{b}, ep)
	}
	// The first data at tick 0; the first call goes out at tick 1, and
	// the next every callEvery (20 ticks) after it; the data again one
	// tick after each call.
	ticks := int(callEvery / probeTick)
	for i := 0; i <= 3*ticks+2; i++ {
		if i == 0 || (i > 2 && (i-2)%ticks == 0) {
			send()
		}
		l.settle()
		l.clk.Advance(probeTick)
		l.settle()
	}
	if got.Load() == 0 {
		t.Fatalf("no data reached the silent peer directly in %v (opening probes %d)", 3*callEvery, l.a.c.Stats.DiscoOpening.Load())
	}
}
