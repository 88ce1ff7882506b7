package relayserver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
)

func genKey(t testing.TB) noise.PrivateKey {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// keySet is a mutable vouching set.
type keySet struct {
	mu sync.Mutex
	m  map[noise.PublicKey]bool
}

func (s *keySet) add(ks ...noise.PrivateKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[noise.PublicKey]bool{}
	}
	for _, k := range ks {
		s.m[k.PublicKey()] = true
	}
}

func (s *keySet) remove(k noise.PrivateKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k.PublicKey())
}

func (s *keySet) allowed(k pubkey.Node) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k.PublicKey]
}

// testRelay is a relay on a real loopback listener.
type testRelay struct {
	t    *testing.T
	srv  *Server
	hs   *http.Server
	addr string
	url  string
	key  noise.PrivateKey
}

// startRelay serves a relay on addr ("127.0.0.1:0" for a new port).
func startRelay(t *testing.T, addr string, key noise.PrivateKey, o Options) *testRelay {
	t.Helper()
	o.Key = key
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	for i := 0; ; i++ { // a restarted relay may wait for its old port
		l, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(relay.Path, srv)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(l)
	r := &testRelay{t: t, srv: srv, hs: hs, addr: l.Addr().String(), url: "http://" + l.Addr().String(), key: key}
	t.Cleanup(r.stop)
	return r
}

func (r *testRelay) stop() {
	r.hs.Close()
	r.srv.Close()
}

// dial opens a raw session as node k.
func (r *testRelay) dial(k noise.PrivateKey) *relay.Conn {
	r.t.Helper()
	c, err := relay.Dial(ctxT(r.t, 5*time.Second), r.url, pubkey.Relay{PublicKey: r.key.PublicKey()}, k, relay.DialOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// packet is a received packet.
type packet struct {
	src  noise.PublicKey
	data []byte
}

// nodeOf is the node key of k, as relay clients address packets.
func nodeOf(k noise.PrivateKey) pubkey.Node { return pubkey.Node{PublicKey: k.PublicKey()} }

// client starts a reconnecting client for k whose packets arrive on the
// returned channel (dropped if the test does not keep up).
func (r *testRelay) client(k noise.PrivateKey, o relay.ClientOptions) (*relay.Client, chan packet) {
	r.t.Helper()
	ch := make(chan packet, 1024)
	o.Receive = func(src pubkey.Node, pkt []byte) {
		select {
		case ch <- packet{src.PublicKey, append([]byte(nil), pkt...)}:
		default:
		}
	}
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	c := relay.NewClient(r.url, pubkey.Relay{PublicKey: r.key.PublicKey()}, k, o)
	r.t.Cleanup(func() { c.Close() })
	if err := c.WaitConnected(ctxT(r.t, 5*time.Second)); err != nil {
		r.t.Fatal(err)
	}
	return c, ch
}

// recvPacket waits for the next packet message on a raw Conn.
func recvPacket(t *testing.T, c *relay.Conn, d time.Duration) (relay.Message, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	for {
		m, err := c.Recv()
		if err != nil || m.Type != relay.MsgKeepAlive {
			if m.Type == relay.MsgPacket {
				m.Data = append([]byte(nil), m.Data...)
			}
			return m, err
		}
	}
}

var errNoPacket = errors.New("no packet")

func expectPacket(t *testing.T, ch chan packet, src noise.PublicKey, data string) {
	t.Helper()
	select {
	case p := <-ch:
		if p.src != src || string(p.data) != data {
			t.Fatalf("got %q from %s, want %q from %s", p.data, p.src, data, src)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%v: want %q from %s", errNoPacket, data, src)
	}
}
