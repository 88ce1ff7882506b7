package device

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

// otherPeersEndpoint is a path layer's endpoint standing for another peer
// (M): what a path layer fooled by M's claims labels V's datagrams with.
type otherPeersEndpoint struct {
	key  [32]byte
	addr netip.AddrPort
}

func (e *otherPeersEndpoint) String() string       { return e.addr.String() }
func (e *otherPeersEndpoint) Addr() netip.AddrPort { return e.addr }
func (e *otherPeersEndpoint) PeerKey() [32]byte    { return e.key }

// mislabellingTransport is a UDP transport that, once mislabel is set,
// hands the engine every datagram as coming from label, and counts what
// the engine sends there (it goes nowhere).
type mislabellingTransport struct {
	conn.Transport
	label    conn.Endpoint
	mislabel atomic.Bool
	stolen   atomic.Int64
}

func (m *mislabellingTransport) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, p, err := m.Transport.Open(port)
	for i, fn := range fns {
		fns[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(bufs, sizes, eps)
			if m.mislabel.Load() {
				for j := range n {
					eps[j] = m.label
				}
			}
			return n, err
		}
	}
	return fns, p, err
}

func (m *mislabellingTransport) Send(bufs [][]byte, ep conn.Endpoint) error {
	if ep == m.label {
		m.stolen.Add(int64(len(bufs)))
		return nil
	}
	return m.Transport.Send(bufs, ep)
}

// TestNoRoamOntoAnotherPeersEndpoint: datagrams that decrypt with peer A's
// session but arrive labelled with another peer's endpoint must not move
// A's endpoint there: the engine's keys decide who sent a packet, and a
// packet from A says nothing about another peer's path.
func TestNoRoamOntoAnotherPeersEndpoint(t *testing.T) {
	a := newNode(t, nil, 1)
	mKey, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	label := &otherPeersEndpoint{key: mKey.PublicKey(), addr: netip.MustParseAddrPort("127.0.0.1:9")}
	tr := &mislabellingTransport{Transport: udp.New(), label: label}
	bk, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	b := &node{tun: tuntest.New(1420), tr: &watchedTransport{Transport: tr}, key: bk,
		addr: netip.AddrFrom4([4]byte{100, 64, 0, 2}), ip6: netip.MustParseAddr("fd7a:115c:a1e0::2")}
	b.dev = New(b.tun, b.tr, Options{})
	t.Cleanup(b.dev.Close)
	port := uint16(0)
	if err := b.dev.Apply(&uapi.Config{PrivateKey: &bk, ListenPort: &port}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "device up", func() bool { return b.dev.Port() != 0 })
	connect(t, a, b, 0)
	connect(t, b, a, 0)
	ping(t, a, b, false)
	ping(t, b, a, false)

	tr.mislabel.Store(true)
	for range 3 {
		ping(t, a, b, false) // authenticated by a's session, labelled M's
		ping(t, b, a, false)
	}
	if n := tr.stolen.Load(); n != 0 {
		t.Fatalf("%d of b's packets for a went to another peer's endpoint", n)
	}
	if st, _ := b.dev.PeerStats(a.pub()); st.Endpoint != a.endpoint() {
		t.Fatalf("b's endpoint for a is %s, a is at %s", st.Endpoint, a.endpoint())
	}
	if b.dev.Stats.RoamRefused.Load() == 0 {
		t.Fatal("the refused roams were not counted")
	}
}
