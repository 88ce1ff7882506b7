package magicsock

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/netsim"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
)

// The path lab: two Conns on hosts behind NATs of a virtual internet
// (package netsim), a STUN responder, and an in-memory relay, all on one
// virtual clock. Virtual time moves only in step, one prober tick at a
// time; between ticks the lab waits until the network is idle (every
// datagram received and acted on), so what the layer sees is the same
// on any machine at any load: no wall-clock window decides anything.

var (
	labStart = time.Unix(1_000_000, 0)
	stunAddr = netip.MustParseAddrPort("198.18.100.1:3478")
)

// Easy and hard NATs, as Tailscale's natlab calls them.
var (
	easyNAT = netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressPortDependent}
	hardNAT = netsim.NATConfig{Mapping: netsim.EndpointDependent, Filtering: netsim.AddressPortDependent}
)

// memRelay is the relay server as the layer sees it: a packet sent to a
// node's key is handed to that node's Conn.
type memRelay struct {
	mu    sync.Mutex
	conns map[pubkey.Node]*Conn
}

type memRelayClient struct {
	r    *memRelay
	from pubkey.Node
}

func (rc memRelayClient) Send(dst pubkey.Node, pkt []byte) error {
	rc.r.mu.Lock()
	c := rc.r.conns[dst]
	rc.r.mu.Unlock()
	if c == nil {
		return errors.New("relay: no such node")
	}
	c.ReceiveRelayed(rc.from, pkt)
	return nil
}

// labNode is one node: its host, its NAT, its Conn, the endpoint of the
// other node, and what it sent and received.
type labNode struct {
	name  string
	priv  noise.PrivateKey
	key   pubkey.Node
	disco noise.PrivateKey
	host  *netsim.Host
	nat   *netsim.NAT
	c     *Conn
	peer  conn.Endpoint
	other *labNode

	// With the engine on top (newEngineLab): the WireGuard device, its
	// host side, and its tunnel address.
	dev     *device.Device
	tun     *tuntest.ChannelTUN
	tunAddr netip.Addr

	sent          atomic.Uint32 // data packets sent (their sequence numbers are 1..sent)
	direct, relay atomic.Int64  // data packets received over UDP / the relay
	mu            sync.Mutex
	seen          map[uint32]bool // sequence numbers received
}

type pathLab struct {
	t     *testing.T
	clk   *clock.Fake
	net   *netsim.Network
	relay *memRelay
	a, b  *labNode
}

func newPathLab(t *testing.T, natA, natB netsim.NATConfig) *pathLab {
	return setupPathLab(t, natA, natB, false)
}

// newEngineLab is a path lab with a WireGuard device on each Conn: the
// data are tunnel packets, carried by one WireGuard session whichever path
// the layer picks.
func newEngineLab(t *testing.T, natA, natB netsim.NATConfig) *pathLab {
	return setupPathLab(t, natA, natB, true)
}

func setupPathLab(t *testing.T, natA, natB netsim.NATConfig, engine bool) *pathLab {
	l := &pathLab{t: t, clk: clock.NewFake(labStart)}
	l.net = netsim.New(l.clk)
	l.net.AddSTUN(stunAddr)
	relay := &memRelay{conns: map[pubkey.Node]*Conn{}}
	l.relay = relay
	l.a = l.newNode("a", 1, natA, relay)
	l.b = l.newNode("b", 2, natB, relay)
	l.a.other, l.b.other = l.b, l.a
	for _, n := range []*labNode{l.a, l.b} {
		other := n.other
		n.c.SetPeers([]PeerInfo{{Key: other.key, DiscoKey: discoOf(other.disco)}})
		ep, err := n.c.ParseEndpoint(PeerEndpoint(other.key))
		if err != nil {
			t.Fatal(err)
		}
		n.peer = ep
		// What the daemon and the control server do with a STUN
		// discovery: announce it, and tell the peer.
		n.c.SetSTUN([]netip.AddrPort{stunAddr}, func(eps []netip.AddrPort) {
			n.c.SetLocalEndpoints(eps)
			other.c.SetPeers([]PeerInfo{{Key: n.key, DiscoKey: discoOf(n.disco), Endpoints: eps}})
		})
		if engine {
			n.startEngine(t)
			continue
		}
		fns, _, err := n.c.Open(0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.c.Close() })
		for i, fn := range fns {
			go n.read(fn, i == len(fns)-1)
		}
	}
	if engine {
		for _, n := range []*labNode{l.a, l.b} {
			err := n.dev.Apply(&uapi.Config{Peers: []uapi.PeerConfig{{
				PublicKey: n.other.key.PublicKey, Endpoint: PeerEndpoint(n.other.key),
				ReplaceAllowedIPs: true, AllowedIPs: []netip.Prefix{netip.PrefixFrom(n.other.tunAddr, 32)},
			}}})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return l
}

// startEngine puts a WireGuard device on the node's Conn (it opens it).
// The device keeps the real clock: the lab waits, between ticks, for the
// network to settle but not for packets on their way through the relay
// and the engine's goroutines, so virtual time can run ahead of them, and
// the engine's timers (a handshake after 15 s of sending without hearing
// back) would fire on a lag of the test, not on the path. Its timers are
// the device's own tests' business (package device, on a clock.Fake);
// here the whole run takes a fraction of a second of real time.
func (n *labNode) startEngine(t *testing.T) {
	n.tun = tuntest.New(1420)
	n.dev = device.New(n.tun, n.c, device.Options{})
	t.Cleanup(n.dev.Close)
	port := uint16(0)
	if err := n.dev.Apply(&uapi.Config{PrivateKey: &n.priv, ListenPort: &port}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "device up", func() bool { return n.dev.Port() != 0 })
	go n.readTUN()
}

// readTUN records the sequence numbers of the tunnel packets delivered to
// the node's host side.
func (n *labNode) readTUN() {
	for pkt := range n.tun.Outbound {
		if len(pkt) < 4 {
			continue
		}
		n.mu.Lock()
		n.seen[binary.BigEndian.Uint32(pkt[len(pkt)-4:])] = true
		n.mu.Unlock()
	}
}

func (l *pathLab) newNode(name string, i byte, cfg netsim.NATConfig, relay *memRelay) *labNode {
	key, disco := genKeyT(l.t), genKeyT(l.t)
	n := &labNode{name: name, priv: key, key: nodeOf(key), disco: disco, seen: map[uint32]bool{},
		tunAddr: netip.AddrFrom4([4]byte{100, 64, 0, i})}
	n.nat = l.net.NewNAT(netip.AddrFrom4([4]byte{198, 18, 0, i}), cfg)
	n.host = l.net.NewHost(netip.AddrFrom4([4]byte{10, 0, i, 2}), n.nat)
	n.c = New(n.host, Options{NodeKey: n.key, DiscoKey: disco, Clock: l.clk})
	relay.mu.Lock()
	relay.conns[n.key] = n.c
	relay.mu.Unlock()
	n.c.SetRelay(memRelayClient{r: relay, from: n.key})
	return n
}

func genKeyT(t *testing.T) noise.PrivateKey {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// read runs a receive function until the Conn closes, counting the data
// packets (disco and STUN never come out of it).
func (n *labNode) read(fn conn.ReceiveFunc, relayed bool) {
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes, eps := make([]int, 16), make([]conn.Endpoint, 16)
	for {
		k, err := fn(bufs, sizes, eps)
		if err != nil {
			return
		}
		for i := range k {
			b := bufs[i][:sizes[i]]
			if len(b) != 16 || b[0] != 4 {
				continue // not one of ours
			}
			n.mu.Lock()
			n.seen[binary.BigEndian.Uint32(b[8:])] = true
			n.mu.Unlock()
			if relayed {
				n.relay.Add(1)
			} else {
				n.direct.Add(1)
			}
		}
	}
}

// sendData sends the next data packet of the transfer to the other node
// (shaped as a WireGuard data message: type 4, then the sequence number).
func (n *labNode) sendData() {
	seq := n.sent.Add(1)
	if n.dev != nil { // a tunnel packet, the sequence number at its end
		payload := binary.BigEndian.AppendUint32([]byte("transfer "), seq)
		n.tun.Inbound <- tuntest.UDPPacket(netip.AddrPortFrom(n.tunAddr, 4000), netip.AddrPortFrom(n.other.tunAddr, 5000), payload)
		return
	}
	b := make([]byte, 16)
	b[0] = 4
	binary.BigEndian.PutUint32(b[8:], seq)
	n.c.Send([][]byte{b}, n.peer)
}

func (n *labNode) got(seq uint32) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seen[seq]
}

func (l *pathLab) pathOf(from, to *labNode) PathKind { return from.c.PeerPath(to.key).Kind }

// settle waits until the network is idle: everything sent was received
// and acted on, at the current virtual time.
func (l *pathLab) settle() {
	l.t.Helper()
	wait.Until(l.t, "network idle", l.net.Idle)
}

// run moves virtual time on by d, one prober tick at a time, with both
// nodes sending a data packet each tick (a transfer in both directions);
// it stops early, returning true, once until holds.
func (l *pathLab) run(d time.Duration, until func() bool) bool {
	l.t.Helper()
	for end := l.clk.Now().Add(d); l.clk.Now().Before(end); {
		l.a.sendData()
		l.b.sendData()
		l.settle()
		l.clk.Advance(probeTick)
		l.settle()
		if until != nil && until() {
			return true
		}
	}
	return false
}

// idle moves virtual time on by d, one prober tick at a time, with no
// data sent.
func (l *pathLab) idle(d time.Duration) {
	l.t.Helper()
	for end := l.clk.Now().Add(d); l.clk.Now().Before(end); {
		l.clk.Advance(probeTick)
		l.settle()
	}
}

func (l *pathLab) both(k PathKind) func() bool {
	return func() bool { return l.pathOf(l.a, l.b) == k && l.pathOf(l.b, l.a) == k }
}

// since is the virtual time since t.
func (l *pathLab) since(t time.Time) time.Duration { return l.clk.Now().Sub(t) }
