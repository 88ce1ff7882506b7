package client

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func key(t *testing.T) noise.PrivateKey {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testNode(t *testing.T, id uint64, name string) netmap.Node {
	a := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(id)}), 32)
	return netmap.Node{ID: id, Name: name, Key: pubkey.Node{PublicKey: key(t).PublicKey()}, Addresses: []netip.Prefix{a}, AllowedIPs: []netip.Prefix{a}}
}

// TestVersionGapResyncs: a delta that does not fit the map makes the client
// reconnect and take a full map; the backoff stays short.
func TestVersionGapResyncs(t *testing.T) {
	sk, nk := key(t), key(t)
	self := testNode(t, 1, "self")
	self.Key = pubkey.Node{PublicKey: nk.PublicKey()}
	peer := testNode(t, 2, "peer")
	var streams atomic.Int32
	var wg sync.WaitGroup
	cb := &noiseconn.Server{Key: sk, Handle: func(c *noiseconn.Conn) {
		wg.Add(1)
		defer wg.Done()
		if c.Peer() != nk.PublicKey() {
			t.Errorf("session key %v", c.Peer())
			return
		}
		m, err := proto.Read(c, proto.MaxServerMessage)
		if err != nil || m.MapRequest == nil {
			t.Errorf("first message %+v %v", m, err)
			return
		}
		n := streams.Add(1)
		full := &netmap.NetworkMap{Version: 1, Self: self}
		if n > 1 {
			full.Peers = []netmap.Node{peer}
		}
		proto.Write(c, &proto.Message{MapResponse: &proto.MapResponse{Full: full}})
		if n == 1 { // a delta from a version the client never had
			proto.Write(c, &proto.Message{MapResponse: &proto.MapResponse{Delta: &netmap.Delta{From: 7, To: 8, PeersAdded: []netmap.Node{peer}}}})
		}
		proto.Read(c, proto.MaxServerMessage) // until the client goes away
	}}
	hs := httptest.NewServer(cb)
	defer hs.Close()
	mapPath := filepath.Join(t.TempDir(), "map.json")
	c, err := New(Config{ServerURL: hs.URL, ServerKey: pubkey.Server{PublicKey: sk.PublicKey()}, NodeKey: nk, MapPath: mapPath,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Logger: logtest.T(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, func(*netmap.NetworkMap) {}) }()
	wait.Until(t, "resync to the full map", func() bool { m := c.NetworkMap(); return m != nil && len(m.Peers) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if n := streams.Load(); n != 2 {
		t.Fatalf("%d streams, want 2", n)
	}
	saved, err := netmap.Load(mapPath)
	if err != nil || len(saved.Peers) != 1 {
		t.Fatalf("saved map %+v %v", saved, err)
	}
	hs.CloseClientConnections()
	wg.Wait()
}

// TestBackoffCappedAndJittered: with no server, each failed attempt waits
// between half and all of a delay that doubles from MinBackoff up to
// MaxBackoff. The waits are read off a virtual clock: no wall-clock window.
func TestBackoffCappedAndJittered(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	log, rec := logtest.New()
	c, err := New(Config{ServerURL: "http://127.0.0.1:1", ServerKey: pubkey.Server{PublicKey: key(t).PublicKey()}, NodeKey: key(t),
		MinBackoff: time.Second, MaxBackoff: 8 * time.Second, Clock: clk, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, func(*netmap.NetworkMap) { t.Error("map from nowhere") }) }()
	backoff, jittered := time.Second, 0
	for i := range 10 {
		var next time.Time
		wait.Until(t, "reconnect timer armed", func() (ok bool) { next, ok = clk.Next(); return ok })
		d := next.Sub(clk.Now())
		if d < backoff/2 || d > backoff {
			t.Fatalf("wait %d: %v, want between %v and %v", i, d, backoff/2, backoff)
		}
		if d != backoff {
			jittered++
		}
		if n := len(rec.Records()); n != i+1 {
			t.Fatalf("wait %d after %d failed attempts, want one attempt per wait:\n%s", i, n, rec.Text())
		}
		clk.Advance(d)
		backoff = min(2*backoff, 8*time.Second)
	}
	if jittered == 0 {
		t.Fatal("no wait was jittered")
	}
	// No server listening is the network, not a refusal: info, with the
	// error and the wait as attributes (the old message-word guess made
	// "connection refused" a warning).
	for _, r := range rec.Records() {
		if r.Msg != "control: map stream ended; reconnecting" || r.Level != slog.LevelInfo || r.Attrs["in"] == "" ||
			!strings.Contains(r.Attrs["err"], "connection refused") {
			t.Fatalf("attempt logged as %v", r)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	// Runs when MinBackoff > MaxBackoff are normalised.
	if c2, _ := New(Config{ServerURL: "http://x", ServerKey: pubkey.Server{PublicKey: key(t).PublicKey()}, NodeKey: key(t), MinBackoff: time.Minute}); c2.cfg.MaxBackoff != time.Minute {
		t.Fatalf("max backoff %v", c2.cfg.MaxBackoff)
	}
	if c3, _ := New(Config{ServerURL: "http://x", ServerKey: pubkey.Server{PublicKey: key(t).PublicKey()}, NodeKey: key(t)}); c3.cfg.MaxBackoff != 30*time.Second {
		t.Fatalf("default max backoff %v", c3.cfg.MaxBackoff)
	}
}

// TestRefusalLoggedAsWarning: a server that refuses the node's key is
// logged at warning level on each retry, with the refusal as the error.
func TestRefusalLoggedAsWarning(t *testing.T) {
	sk := key(t)
	cb := &noiseconn.Server{Key: sk, Authorize: func(noise.PublicKey) error { return errors.New("unknown node") },
		Handle: func(c *noiseconn.Conn) { t.Error("refused node served") }}
	hs := httptest.NewServer(cb)
	defer hs.Close()
	log, rec := logtest.New()
	c, err := New(Config{ServerURL: hs.URL, ServerKey: pubkey.Server{PublicKey: sk.PublicKey()}, NodeKey: key(t),
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, func(*netmap.NetworkMap) { t.Error("map from a refusing server") }) }()
	wait.Until(t, "the refusal logged", func() bool { return len(rec.Records()) >= 2 })
	cancel()
	<-done
	for _, r := range rec.Records() {
		if r.Msg != "control: map stream ended; reconnecting" || r.Level != slog.LevelWarn || !strings.Contains(r.Attrs["err"], "refused") {
			t.Fatalf("refusal logged as %v", r)
		}
	}
}
