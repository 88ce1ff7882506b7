package magicsock_test

import (
	"bytes"
	"context"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/stun"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

type node struct {
	t     *testing.T
	key   noise.PrivateKey
	disco noise.PrivateKey
	ms    *magicsock.Conn
	dev   *device.Device
	tun   *tuntest.ChannelTUN
	addr  netip.Addr
}

func genKey(t *testing.T) noise.PrivateKey {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newNode(t *testing.T, i byte) *node {
	n := &node{t: t, key: genKey(t), disco: genKey(t), tun: tuntest.New(1420), addr: netip.AddrFrom4([4]byte{100, 64, 0, i})}
	n.ms = magicsock.New(udp.New(), magicsock.Options{NodeKey: nodeKeyOf(n.key), DiscoKey: n.disco})
	n.dev = device.New(n.tun, n.ms, device.Options{})
	t.Cleanup(n.dev.Close)
	port := uint16(0)
	if err := n.dev.Apply(&uapi.Config{PrivateKey: &n.key, ListenPort: &port}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "device up", func() bool { return n.dev.Port() != 0 })
	return n
}

func (n *node) udpAddr() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.dev.Port())
}

// peer makes o a peer of n, reported at eps.
func (n *node) peer(o *node, eps ...netip.AddrPort) {
	n.t.Helper()
	n.ms.SetPeers([]magicsock.PeerInfo{{Key: nodeKeyOf(o.key), DiscoKey: discoKeyOf(o.disco), Endpoints: eps}})
	err := n.dev.Apply(&uapi.Config{Peers: []uapi.PeerConfig{{
		PublicKey: o.key.PublicKey(), Endpoint: magicsock.PeerEndpoint(nodeKeyOf(o.key)),
		ReplaceAllowedIPs: true, AllowedIPs: []netip.Prefix{netip.PrefixFrom(o.addr, 32)},
	}}})
	if err != nil {
		n.t.Fatal(err)
	}
}

// send pushes one packet from a to b through the tunnel and reports
// whether b's host side got it within d.
func send(a, b *node, d time.Duration) bool {
	payload := []byte("warren " + time.Now().String())
	pkt := tuntest.UDPPacket(netip.AddrPortFrom(a.addr, 4000), netip.AddrPortFrom(b.addr, 5000), payload)
	a.tun.Inbound <- pkt
	deadline := time.After(d)
	for {
		select {
		case got := <-b.tun.Outbound:
			if bytes.Equal(got, pkt) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// flow keeps sending until a packet arrives (the first may wait for a
// handshake).
func flow(t *testing.T, a, b *node, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !send(a, b, 300*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no packet from %v to %v within %v (a→b path %+v)", a.addr, b.addr, d, a.ms.PeerPath(nodeKeyOf(b.key)))
		}
	}
}

func TestDirectPath(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	a.peer(b, b.udpAddr())
	b.peer(a, a.udpAddr())
	flow(t, a, b, 5*time.Second)
	flow(t, b, a, 5*time.Second)
	wait.For(t, 10*time.Second, "direct path", func() bool {
		p := a.ms.PeerPath(nodeKeyOf(b.key))
		return p.Kind == magicsock.PathDirect && p.Addr == b.udpAddr() && p.RTT > 0
	})
	if a.ms.Stats.DiscoBad.Load() != 0 || b.ms.Stats.DiscoBad.Load() != 0 {
		t.Errorf("bad disco messages: %d %d", a.ms.Stats.DiscoBad.Load(), b.ms.Stats.DiscoBad.Load())
	}
}

// TestLearnsUnreportedAddress: b knows no address for a; a's handshake
// from an unknown address is attributed to a once WireGuard authenticated
// it, and b answers there.
func TestLearnsUnreportedAddress(t *testing.T) {
	a, b := newNode(t, 1), newNode(t, 2)
	a.peer(b, b.udpAddr())
	b.peer(a)
	flow(t, a, b, 5*time.Second)
	flow(t, b, a, 5*time.Second)
	wait.For(t, 10*time.Second, "b's direct path to a", func() bool {
		return b.ms.PeerPath(nodeKeyOf(a.key)).Kind == magicsock.PathDirect
	})
}

// TestForgedProbesIgnored: disco packets from unknown keys or with bad
// boxes are counted and never answered.
func TestForgedProbesIgnored(t *testing.T) {
	a := newNode(t, 1)
	c, err := net.Dial("udp", a.udpAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	junk := append([]byte("WRNdsc"), make([]byte, 32+24+16+1+12+32)...)
	c.Write(junk)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1500)); err == nil {
		t.Fatalf("answered a forged probe with %d bytes", n)
	}
	wait.For(t, 5*time.Second, "bad disco counted", func() bool { return a.ms.Stats.DiscoBad.Load() == 1 })
}

// relayEnv is a real relay server on loopback vouching for every key.
func relayEnv(t *testing.T) (url string, key noise.PublicKey) {
	k := genKey(t)
	srv, err := relayserver.NewServer(relayserver.Options{Key: k, Allowed: func(pubkey.Node) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL, k.PublicKey()
}

// nodeKeyOf and discoKeyOf are the typed public keys of a private key.
func nodeKeyOf(k noise.PrivateKey) pubkey.Node   { return pubkey.Node{PublicKey: k.PublicKey()} }
func discoKeyOf(k noise.PrivateKey) pubkey.Disco { return pubkey.Disco{PublicKey: k.PublicKey()} }

func (n *node) useRelay(t *testing.T, url string, key noise.PublicKey) {
	c := relay.NewClient(url, pubkey.Relay{PublicKey: key}, n.key, relay.ClientOptions{Receive: n.ms.ReceiveRelayed})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	n.ms.SetRelay(c)
}

// middlebox forwards UDP between a and b through one socket per side, so
// each sees the other at the middlebox's address (like a NAT); cut drops
// everything.
type middlebox struct {
	aSide, bSide *net.UDPConn
	cut          atomic.Bool
	wg           sync.WaitGroup
}

func newMiddlebox(t *testing.T, a, b netip.AddrPort) *middlebox {
	m := &middlebox{}
	var err error
	if m.aSide, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if m.bSide, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	pump := func(in, out *net.UDPConn, to netip.AddrPort) {
		defer m.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := in.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !m.cut.Load() {
				out.WriteToUDPAddrPort(buf[:n], to)
			}
		}
	}
	m.wg.Add(2)
	go pump(m.aSide, m.bSide, b) // a sends to aSide, b sees bSide
	go pump(m.bSide, m.aSide, a)
	t.Cleanup(func() { m.aSide.Close(); m.bSide.Close(); m.wg.Wait() })
	return m
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestRelayFallbackAndUpgrade: with no working direct address the pair
// talks through the relay; when a direct path appears (announced by call
// me maybe) they move to it; when it is cut they are back on the relay
// within seconds, without losing the WireGuard session.
func TestRelayFallbackAndUpgrade(t *testing.T) {
	url, rkey := relayEnv(t)
	a, b := newNode(t, 1), newNode(t, 2)
	a.useRelay(t, url, rkey)
	b.useRelay(t, url, rkey)
	dead := netip.MustParseAddrPort("127.0.0.1:9") // nothing answers there
	a.peer(b, dead)
	b.peer(a, dead)
	flow(t, a, b, 5*time.Second)
	flow(t, b, a, 5*time.Second)
	if k := a.ms.PeerPath(nodeKeyOf(b.key)).Kind; k != magicsock.PathRelay {
		t.Fatalf("path with no direct address: %s", k)
	}
	if a.ms.Stats.RelaySent.Load() == 0 || b.ms.Stats.RelayRecv.Load() == 0 {
		t.Fatal("nothing went through the relay")
	}

	// A direct path appears (through a middlebox, as a NAT would present
	// it) and is announced: both sides move to it.
	m := newMiddlebox(t, a.udpAddr(), b.udpAddr())
	a.ms.SetLocalEndpoints([]netip.AddrPort{addrOf(m.bSide)}) // where b can reach a
	b.ms.SetLocalEndpoints([]netip.AddrPort{addrOf(m.aSide)}) // where a can reach b
	start := time.Now()
	wait.For(t, 10*time.Second, "upgrade to direct", func() bool {
		send(a, b, 100*time.Millisecond)
		return a.ms.PeerPath(nodeKeyOf(b.key)).Kind == magicsock.PathDirect &&
			b.ms.PeerPath(nodeKeyOf(a.key)).Kind == magicsock.PathDirect
	})
	t.Logf("relay → direct in %v", time.Since(start).Round(time.Millisecond))
	flow(t, a, b, 5*time.Second)
	handshakes := a.dev.State().Peers[0].LastHandshake

	// Cut it: back on the relay within the trust window, same session.
	m.cut.Store(true)
	cut := time.Now()
	wait.For(t, 10*time.Second, "fallback to the relay", func() bool {
		return a.ms.PeerPath(nodeKeyOf(b.key)).Kind == magicsock.PathRelay
	})
	flow(t, a, b, 5*time.Second)
	t.Logf("direct cut → traffic over the relay in %v", time.Since(cut).Round(time.Millisecond))
	if got := a.dev.State().Peers[0].LastHandshake; !got.Equal(handshakes) {
		t.Logf("a new handshake happened (%v → %v); allowed, but not needed", handshakes, got)
	}
	if !strings.Contains(a.ms.PeerPath(nodeKeyOf(b.key)).Kind.String(), "relay") {
		t.Fatal("unexpected path")
	}
}

// TestSTUNDiscovery: STUN through the WireGuard socket reports the
// address peers see, and the answer never reaches the engine.
func TestSTUNDiscovery(t *testing.T) {
	a := newNode(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, _, err := stun.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []netip.AddrPort, 1)
	a.ms.SetSTUN([]netip.AddrPort{addr.(*net.UDPAddr).AddrPort()}, func(eps []netip.AddrPort) { got <- eps })
	select {
	case eps := <-got:
		if len(eps) != 1 || eps[0] != a.udpAddr() {
			t.Fatalf("discovered %v, want [%v]", eps, a.udpAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no STUN answer")
	}
	if d := a.ms.Discovered(); len(d) != 1 {
		t.Fatalf("Discovered() = %v", d)
	}
	if n := a.dev.Stats.DropInvalid.Load(); n != 0 {
		t.Fatalf("%d STUN answers reached the engine", n)
	}
}
