package magicsock_test

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/uapi"
)

// These tests play a hostile member of the mesh against the path layer: a
// node with its own valid keys that claims addresses which are not its own
// (in call-me-maybe messages, in the endpoints it reports to the server) or
// replays another node's probes. Whatever it claims, a third node's
// traffic to the victim must keep reaching the victim.

// peerSpec is one peer as a node's netmap presents it.
type peerSpec struct {
	key, disco noise.PublicKey
	tunnel     netip.Addr
	eps        []netip.AddrPort
}

func specOf(o *node, eps ...netip.AddrPort) peerSpec {
	return peerSpec{key: o.key.PublicKey(), disco: o.disco.PublicKey(), tunnel: o.addr, eps: eps}
}

// setPeers gives n exactly the peers ps (in that order, as a netmap would).
func (n *node) setPeers(ps ...peerSpec) {
	n.t.Helper()
	var infos []magicsock.PeerInfo
	var cfgs []uapi.PeerConfig
	for _, p := range ps {
		infos = append(infos, magicsock.PeerInfo{Key: pubkey.Node{PublicKey: p.key}, DiscoKey: pubkey.Disco{PublicKey: p.disco}, Endpoints: p.eps})
		cfgs = append(cfgs, uapi.PeerConfig{PublicKey: p.key, Endpoint: magicsock.PeerEndpoint(pubkey.Node{PublicKey: p.key}),
			ReplaceAllowedIPs: true, AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.tunnel, 32)}})
	}
	n.ms.SetPeers(infos)
	if err := n.dev.Apply(&uapi.Config{Peers: cfgs}); err != nil {
		n.t.Fatal(err)
	}
}

// rogueSocket is a hostile member's UDP socket: it counts the WireGuard
// messages that reach it (ciphertext stolen from someone else) and hands
// over the disco packets.
type rogueSocket struct {
	c     *net.UDPConn
	wg    atomic.Int64
	disco chan []byte
	done  sync.WaitGroup
}

func newRogueSocket(t *testing.T) *rogueSocket {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &rogueSocket{c: c, disco: make(chan []byte, 1024)}
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			switch {
			case isWireGuard(b):
				r.wg.Add(1)
			case len(b) > 6 && string(b[:6]) == "WRNdsc":
				select {
				case r.disco <- append([]byte(nil), b...):
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { c.Close(); r.done.Wait() })
	return r
}

func (r *rogueSocket) addr() netip.AddrPort { return addrOf(r.c) }

func (r *rogueSocket) send(t *testing.T, b []byte, to netip.AddrPort) {
	t.Helper()
	if _, err := r.c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// waitDisco waits for the next disco packet that reaches the socket.
func (r *rogueSocket) waitDisco(t *testing.T, what string) []byte {
	t.Helper()
	select {
	case b := <-r.disco:
		return b
	case <-time.After(10 * time.Second):
		t.Fatalf("no disco packet (%s) within 10s", what)
		return nil
	}
}

func isWireGuard(b []byte) bool {
	return len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0
}

// directTo waits until from's direct path to o is o's real address.
func directTo(t *testing.T, from, o *node) {
	t.Helper()
	wait.For(t, 10*time.Second, "direct path to the peer's real address", func() bool {
		send(from, o, 50*time.Millisecond)
		p := from.ms.PeerPath(nodeKeyOf(o.key))
		return p.Kind == magicsock.PathDirect && p.Addr == o.udpAddr()
	})
}

// TestRogueClaimsCannotStealPeer: a rogue member M claims V's address —
// in a call-me-maybe sealed with M's own (valid) disco key, or among the
// endpoints it reports to the server. N may probe that address for M, but
// V's packets from it must not be attributed to M, and N's traffic to V
// must keep going to V — not to M's socket.
func TestRogueClaimsCannotStealPeer(t *testing.T) {
	for _, how := range []string{"call-me-maybe", "reported endpoints"} {
		t.Run(how, func(t *testing.T) {
			n, v := newNode(t, 1), newNode(t, 2)
			rogue := newRogueSocket(t)
			mKey, mDisco := genKey(t), genKey(t)
			m := peerSpec{key: mKey.PublicKey(), disco: mDisco.PublicKey(), tunnel: netip.MustParseAddr("100.64.0.66"),
				eps: []netip.AddrPort{rogue.addr()}}
			n.setPeers(specOf(v, v.udpAddr()), m)
			v.setPeers(specOf(n, n.udpAddr()))
			flow(t, n, v, 5*time.Second)
			flow(t, v, n, 5*time.Second)
			directTo(t, n, v)

			switch how {
			case "call-me-maybe":
				// "Call me maybe at V's address" (and at mine, so that N's
				// probe shows the message was processed).
				rogue.send(t, magicsock.SealCallMeMaybeForTest(mDisco, n.disco.PublicKey(),
					[]netip.AddrPort{v.udpAddr(), rogue.addr()}), n.udpAddr())
				rogue.waitDisco(t, "N probing the rogue after its call-me-maybe")
			case "reported endpoints":
				m.eps = []netip.AddrPort{rogue.addr(), v.udpAddr()}
				n.setPeers(specOf(v, v.udpAddr()), m)
			}

			// V keeps talking to N from its real address, and N to V.
			flow(t, v, n, 5*time.Second)
			for range 5 {
				flow(t, n, v, 5*time.Second)
				flow(t, v, n, 5*time.Second)
			}
			if got := rogue.wg.Load(); got != 0 {
				t.Fatalf("the rogue received %d WireGuard messages meant for V", got)
			}
			if p := n.ms.PeerPath(nodeKeyOf(v.key)); p.Addr != v.udpAddr() {
				t.Fatalf("N's path to V moved to %+v", p)
			}
			if r := n.dev.Stats.RoamRefused.Load(); r != 0 {
				t.Fatalf("the path layer labelled %d of V's batches as another peer's (the engine refused them)", r)
			}
		})
	}
}

// TestSharedPrivateAddress: two honest peers on different LANs report the
// same private address X (192.168.1.10:41641 on both LANs). From N, X
// reaches M; V is reached at its other address. Traffic to each must go to
// that peer: X belongs to the peer whose disco key answered from it.
func TestSharedPrivateAddress(t *testing.T) {
	n, v, m := newNode(t, 1), newNode(t, 2), newNode(t, 3)
	x := m.udpAddr() // the private address both report; from N it reaches M
	// V is listed last, so a layer trusting claims gives X to V.
	n.setPeers(specOf(m, x), specOf(v, x, v.udpAddr()))
	v.setPeers(specOf(n, n.udpAddr()))
	m.setPeers(specOf(n, n.udpAddr()))
	// M and V start the handshakes (N's guess for V before any probe is
	// answered is the first address reported, X, which is M's).
	for range 3 {
		flow(t, m, n, 5*time.Second)
		flow(t, n, m, 5*time.Second)
		flow(t, v, n, 5*time.Second)
		flow(t, n, v, 5*time.Second)
	}
	directTo(t, n, m)
	directTo(t, n, v)
	// A netmap update (any change elsewhere) hands N the same claims again:
	// they must not take X from M, who answered there.
	n.setPeers(specOf(m, x), specOf(v, x, v.udpAddr()))
	for range 3 {
		flow(t, m, n, 5*time.Second)
		flow(t, n, m, 5*time.Second)
		flow(t, v, n, 5*time.Second)
		flow(t, n, v, 5*time.Second)
	}
	if r := n.dev.Stats.RoamRefused.Load(); r != 0 {
		t.Fatalf("the path layer labelled %d batches with the other peer's endpoint (the engine refused them)", r)
	}
}

// TestReplayedPingChangesNothing: a ping V sealed (captured on the wire by
// a member that can see V's traffic) is replayed from another address. The
// replay must not be answered, nor make that address a path to V.
func TestReplayedPingChangesNothing(t *testing.T) {
	n, v := newNode(t, 1), newNode(t, 2)
	n.setPeers(specOf(v, v.udpAddr()))
	v.setPeers(specOf(n, n.udpAddr()))
	flow(t, n, v, 5*time.Second)
	directTo(t, n, v)

	first, replayer := newRogueSocket(t), newRogueSocket(t)
	ping := magicsock.SealPingForTest(v.disco, n.disco.PublicKey(), v.key.PublicKey(), v.ms.PingClockForTest())
	replayedTx := magicsock.TxOfPingForTest(n.disco, v.disco.PublicKey(), ping)
	first.send(t, ping, n.udpAddr()) // the original
	waitPong(t, first, n, v, replayedTx)

	replayer.send(t, ping, n.udpAddr()) // the replay
	// A fresh ping after it: its answer shows the replay was processed
	// (loopback keeps the order; N handles its socket's packets in order).
	fresh := magicsock.SealPingForTest(v.disco, n.disco.PublicKey(), v.key.PublicKey(), v.ms.PingClockForTest())
	freshTx := magicsock.TxOfPingForTest(n.disco, v.disco.PublicKey(), fresh)
	replayer.send(t, fresh, n.udpAddr())
	for {
		b := replayer.waitDisco(t, "the answer to the fresh ping")
		typ, tx, ok := magicsock.OpenDiscoForTest(v.disco, n.disco.PublicKey(), b)
		if !ok || typ != 2 {
			continue // N probing the new address for V: allowed
		}
		if tx == replayedTx {
			t.Fatal("N answered a replayed ping")
		}
		if tx == freshTx {
			break
		}
	}
	flow(t, n, v, 5*time.Second)
	if p := n.ms.PeerPath(nodeKeyOf(v.key)); p.Kind != magicsock.PathDirect || p.Addr != v.udpAddr() {
		t.Fatalf("N's path to V after the replay: %+v", p)
	}
	if got := first.wg.Load() + replayer.wg.Load(); got != 0 {
		t.Fatalf("%d WireGuard messages went to the replaying sockets", got)
	}
}

// waitPong waits for N's pong with transaction tx at the socket.
func waitPong(t *testing.T, s *rogueSocket, n, v *node, tx [12]byte) {
	t.Helper()
	for {
		b := s.waitDisco(t, "a pong")
		if typ, got, ok := magicsock.OpenDiscoForTest(v.disco, n.disco.PublicKey(), b); ok && typ == 2 && got == tx {
			return
		}
	}
}
