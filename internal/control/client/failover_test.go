package client

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestFailsOverToTheNextURL: given several server URLs, the client skips
// one that does not answer, and when the replica it streams from goes
// away it moves to the next; each replica's full map shows where it is.
func TestFailsOverToTheNextURL(t *testing.T) {
	sk, nk := key(t), key(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[string][]*noiseconn.Conn{} // by replica: a hijacked connection outlives httptest's Close
	replica := func(name string) *httptest.Server {
		self := testNode(t, 1, name) // named after the replica: where the map came from
		self.Key = pubkey.Node{PublicKey: nk.PublicKey()}
		return httptest.NewServer(&noiseconn.Server{Key: sk, Handle: func(c *noiseconn.Conn) {
			wg.Add(1)
			defer wg.Done()
			mu.Lock()
			conns[name] = append(conns[name], c)
			mu.Unlock()
			if m, err := proto.Read(c, proto.MaxServerMessage); err != nil || m.MapRequest == nil {
				return
			}
			proto.Write(c, &proto.Message{MapResponse: &proto.MapResponse{Full: &netmap.NetworkMap{Version: 1, Self: self}}})
			proto.Read(c, proto.MaxServerMessage) // until either side goes away
		}})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close() // nothing listens there: refused at once
	r1, r2 := replica("r1"), replica("r2")
	defer r2.Close()
	c, err := New(Config{ServerURL: dead + "," + r1.URL + "," + r2.URL, ServerKey: pubkey.Server{PublicKey: sk.PublicKey()}, NodeKey: nk,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Logger: logtest.T(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, func(*netmap.NetworkMap) {}) }()
	from := func(name string) func() bool {
		return func() bool { m := c.NetworkMap(); return m != nil && m.Self.Name == name }
	}
	wait.Until(t, "a map from r1, the first URL that answers", from("r1"))
	r1.Close()
	mu.Lock()
	for _, c := range conns["r1"] {
		c.Close()
	}
	mu.Unlock()
	wait.Until(t, "a map from r2 once r1 is gone", from("r2"))
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	for _, c := range conns["r2"] {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
}
