package magicsock

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/udp"
)

// benchConn opens a path layer with one peer whose direct path to a
// loopback sink is trusted (as after a pong).
func benchConn(b *testing.B) (*Conn, *peerEP, []conn.ReceiveFunc) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
		}
	}()
	k, _ := noise.GeneratePrivateKey()
	c := New(udp.New(), Options{NodeKey: nodeOf(k), DiscoKey: k})
	fns, _, err := c.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	peer, _ := noise.GeneratePrivateKey()
	addr := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	c.SetPeers([]PeerInfo{{Key: nodeOf(peer), DiscoKey: discoOf(peer), Endpoints: []netip.AddrPort{addr}}})
	c.mu.RLock()
	p := c.peers[nodeOf(peer)]
	c.mu.RUnlock()
	p.mu.Lock()
	p.cands[addr].lastPong = time.Now().Add(time.Hour) // trusted for the benchmark
	p.best = addr
	p.mu.Unlock()
	return c, p, fns
}

// BenchmarkSendDirect: a batch of 64 WireGuard-sized datagrams to a peer
// over its trusted direct path.
func BenchmarkSendDirect(b *testing.B) {
	c, p, _ := benchConn(b)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 1452)
		bufs[i][0] = 4
	}
	b.SetBytes(int64(64 * 1452))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.Send(bufs, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReceiveKnownPeer: datagrams from a peer's known address are
// attributed to the peer's endpoint on their way to the engine.
func BenchmarkReceiveKnownPeer(b *testing.B) {
	c, p, fns := benchConn(b)
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	c.mu.Lock()
	c.byAddr[src.LocalAddr().(*net.UDPAddr).AddrPort()] = p
	c.mu.Unlock()
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), c.udpPort())
	const batch = 32
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	eps := make([]conn.Endpoint, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	pkt := make([]byte, 1452)
	pkt[0] = 4
	b.SetBytes(batch * 1452)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for range batch {
			src.WriteToUDPAddrPort(pkt, dst)
		}
		for got := 0; got < batch; {
			n, err := fns[0](bufs, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				if eps[i] != conn.Endpoint(p) {
					b.Fatalf("packet %d attributed to %v", i, eps[i])
				}
			}
			got += n
		}
	}
}
