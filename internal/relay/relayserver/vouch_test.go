package relayserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// world is a coordination server as `warren server --relay` runs it: the
// control server, the admin API and the embedded relay on one listener,
// over a SQLite store.
type world struct {
	st     *store.Store
	key    noise.PrivateKey
	hs     *httptest.Server
	embed  *Server
	apiKey string
	user   *store.User
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "warren.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := &world{st: st, key: genKey(t)}
	if w.apiKey, _, err = st.CreateAPIKey(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if w.user, err = st.CreateUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	srv := server.New(st, w.key, server.Options{})
	t.Cleanup(func() { srv.Close() })
	if w.embed, err = NewServer(Options{Key: w.key, Allowed: StoreAllowed(st, 50*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.embed.Close() })
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle(admin.Prefix, admin.New(st, srv.Notify))
	mux.Handle(relay.Path, w.embed)
	w.hs = httptest.NewServer(mux)
	t.Cleanup(w.hs.Close)
	return w
}

// addNode registers a node in the store, as the control server does on
// join, and returns its key and ID.
func (w *world) addNode(t *testing.T) (noise.PrivateKey, int64) {
	t.Helper()
	ctx := context.Background()
	ak, _, err := w.st.CreatePreAuthKey(ctx, w.user.ID, store.PreAuthKeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k := genKey(t)
	n, err := w.st.RegisterNode(ctx, ak, pubkey.Node{PublicKey: k.PublicKey()}, "host", store.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return k, n.ID
}

func (w *world) expire(t *testing.T, id int64) {
	t.Helper()
	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/nodes/%d/expire", w.hs.URL, id), nil)
	req.Header.Set("Authorization", "Bearer "+w.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("expire: %s", resp.Status)
	}
}

func dialErr(t *testing.T, relayURL string, relayKey noise.PublicKey, k noise.PrivateKey) error {
	c, err := relay.Dial(ctxT(t, 5*time.Second), relayURL, pubkey.Relay{PublicKey: relayKey}, k, relay.DialOptions{})
	if err == nil {
		c.Close()
	}
	return err
}

func TestAdminPollerVouching(t *testing.T) {
	w := newWorld(t)
	n1, id1 := w.addNode(t)
	n2, _ := w.addNode(t)
	stranger := genKey(t)

	p := &AdminPoller{ServerURL: w.hs.URL, APIKey: w.apiKey, Interval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if p.Allowed(nodeOf(n1)) {
		t.Fatal("allowed before the first poll")
	}
	go p.Run(ctx)
	select {
	case <-p.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("poller never ready")
	}
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: p.Allowed, KeepAlive: time.Second})
	rk := r.key.PublicKey()
	if err := dialErr(t, r.url, rk, stranger); !errors.Is(err, relay.ErrNotVouched) {
		t.Fatalf("stranger: %v", err)
	}
	c1 := r.dial(n1)
	if err := dialErr(t, r.url, rk, n2); err != nil {
		t.Fatalf("n2: %v", err)
	}
	// Expiring n1 through the admin API ends its session and refuses it.
	w.expire(t, id1)
	for {
		m, err := recvPacket(t, c1, 5*time.Second)
		if err != nil {
			t.Fatalf("no closing notice: %v", err)
		}
		if m.Type == relay.MsgClosing && m.Reason == relay.ClosingNotVouched {
			break
		}
	}
	if err := dialErr(t, r.url, rk, n1); !errors.Is(err, relay.ErrNotVouched) {
		t.Fatalf("expired n1: %v", err)
	}
	// A node that joins later is vouched for at the next poll.
	n3, _ := w.addNode(t)
	wait.Until(t, "n3 vouched", func() bool { return dialErr(t, r.url, rk, n3) == nil })

	// A wrong API key fails the poll, which keeps the last answer.
	bad := &AdminPoller{ServerURL: w.hs.URL, APIKey: "wapi_nope"}
	if err := bad.Poll(ctx); err == nil {
		t.Fatal("poll with a bad API key worked")
	}
	if bad.Allowed(nodeOf(n2)) {
		t.Fatal("bad poller allows")
	}
	if err := bad.Err(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad poller's Err: %v", err)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("good poller's Err: %v", err)
	}
	// Running, it logs the failure once, at warning level.
	log, rec := logtest.New()
	bad = &AdminPoller{ServerURL: w.hs.URL, APIKey: "wapi_nope", Interval: 10 * time.Millisecond, Logger: log}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { bad.Run(rctx); close(done) }()
	wait.Until(t, "the poll failure logged", func() bool {
		r, ok := rec.Find("relay: polling nodes failed")
		return ok && r.Level == slog.LevelWarn && strings.Contains(r.Attrs["err"], "401")
	})
	cancel()
	<-done
	if strings.Contains(rec.Text(), "wapi_nope") {
		t.Fatalf("the API key is in the log:\n%s", rec.Text())
	}
}

// TestAdminPollerOnFakeClock: the poller polls every Interval of its
// clock (a node added meanwhile is vouched for only once the clock reaches
// the next poll), and when a poll fails it keeps the last answer but still
// honours the expiry it knows: a node is refused once the clock passes
// its expiry, with no poll in between.
func TestAdminPollerOnFakeClock(t *testing.T) {
	w := newWorld(t)
	fc := clock.NewFake(time.Now())
	n1, id1 := w.addNode(t)
	at := fc.Now().Add(time.Minute).Truncate(time.Second) // whatever precision the store keeps
	if err := w.st.SetNodeExpiry(context.Background(), id1, at); err != nil {
		t.Fatal(err)
	}
	const iv = 10 * time.Second
	p := &AdminPoller{ServerURL: w.hs.URL, APIKey: w.apiKey, Interval: iv, Clock: fc}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	wait.Until(t, "the first poll", func() bool { return p.Allowed(nodeOf(n1)) })
	pollArmed := func() {
		t.Helper()
		wait.Until(t, "the next poll armed", func() bool { next, ok := fc.Next(); return ok && next.Sub(fc.Now()) == iv })
	}
	pollArmed()
	n2, _ := w.addNode(t)
	if p.Allowed(nodeOf(n2)) {
		t.Fatal("a node added after the poll vouched for before the next")
	}
	fc.Advance(iv)
	wait.Until(t, "the node added vouched for at the next poll", func() bool { return p.Allowed(nodeOf(n2)) })
	pollArmed()

	// The server goes away: polls fail, the last answer stays, and n1's
	// expiry still takes effect on the poller's clock.
	w.hs.Close()
	fc.Advance(iv)
	wait.Until(t, "a failed poll", func() bool { return p.Err() != nil })
	if !p.Allowed(nodeOf(n1)) || !p.Allowed(nodeOf(n2)) {
		t.Fatal("a failed poll dropped the last answer")
	}
	pollArmed()
	fc.Advance(at.Sub(fc.Now()) - time.Millisecond)
	if !p.Allowed(nodeOf(n1)) {
		t.Fatal("n1 refused before its expiry")
	}
	fc.Advance(time.Millisecond)
	if p.Allowed(nodeOf(n1)) {
		t.Fatal("n1 still allowed at its expiry, with the server away")
	}
	if !p.Allowed(nodeOf(n2)) {
		t.Fatal("n2, which never expires, refused")
	}
}

func TestEmbeddedStoreVouching(t *testing.T) {
	w := newWorld(t)
	n1, id1 := w.addNode(t)
	sk := w.key.PublicKey()
	// The embedded relay uses the coordination server's key and URL.
	c := w.dialEmbedded(t, n1)
	c.Close()
	if err := dialErr(t, w.hs.URL, sk, genKey(t)); !errors.Is(err, relay.ErrNotVouched) {
		t.Fatalf("stranger: %v", err)
	}
	w.expire(t, id1)
	wait.Until(t, "expired node refused", func() bool { return errors.Is(dialErr(t, w.hs.URL, sk, n1), relay.ErrNotVouched) })
	if w.embed.Stats().Refused < 2 {
		t.Fatalf("stats %+v", w.embed.Stats())
	}
}

func (w *world) dialEmbedded(t *testing.T, k noise.PrivateKey) *relay.Conn {
	t.Helper()
	c, err := relay.Dial(ctxT(t, 5*time.Second), w.hs.URL, pubkey.Relay{PublicKey: w.key.PublicKey()}, k, relay.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// connectProxy is a minimal HTTP CONNECT proxy counting its tunnels.
func connectProxy(t *testing.T) (*url.URL, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
					return
				}
				up, err := net.Dial("tcp", req.Host)
				if err != nil {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				defer up.Close()
				n.Add(1)
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go func() { io.Copy(up, br); up.Close() }()
				io.Copy(c, up)
			}()
		}
	}()
	return &url.URL{Scheme: "http", Host: l.Addr().String()}, &n
}

func TestThroughHTTPProxy(t *testing.T) {
	var ks keySet
	a, b := genKey(t), genKey(t)
	ks.add(a, b)
	r := startRelay(t, "127.0.0.1:0", genKey(t), Options{Allowed: ks.allowed})
	pu, tunnels := connectProxy(t)
	proxy := func(*http.Request) (*url.URL, error) { return pu, nil }
	ca, _ := r.client(a, relay.ClientOptions{DialOptions: relay.DialOptions{Proxy: proxy}})
	_, chb := r.client(b, relay.ClientOptions{})
	if err := ca.Send(nodeOf(b), []byte("via proxy")); err != nil {
		t.Fatal(err)
	}
	expectPacket(t, chb, a.PublicKey(), "via proxy")
	if tunnels.Load() != 1 {
		t.Fatalf("%d tunnels", tunnels.Load())
	}
	// A proxy that refuses fails the dial with its status.
	bad := func(*http.Request) (*url.URL, error) { return &url.URL{Scheme: "http", Host: r.addr}, nil }
	_, err := relay.Dial(ctxT(t, 5*time.Second), r.url, pubkey.Relay{PublicKey: r.key.PublicKey()}, a, relay.DialOptions{Proxy: bad})
	if err == nil {
		t.Fatal("dial through a non-proxy worked")
	}
}

// TestRelayKeyVouching: a standalone relay vouches with a relay key
// (scope "relay"), which cannot do anything else on the admin API.
func TestRelayKeyVouching(t *testing.T) {
	w := newWorld(t)
	n1, id1 := w.addNode(t)
	relayKey, _, err := w.st.CreateScopedAPIKey(context.Background(), store.ScopeRelay, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	p := &AdminPoller{ServerURL: w.hs.URL, APIKey: relayKey}
	if err := p.Poll(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !p.Allowed(nodeOf(n1)) || p.Allowed(nodeOf(genKey(t))) {
		t.Fatal("the relay key's poll does not vouch for exactly the registered node")
	}
	w.expire(t, id1)
	if err := p.Poll(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if p.Allowed(nodeOf(n1)) {
		t.Fatal("expired node still vouched for")
	}
	req, _ := http.NewRequest("POST", w.hs.URL+"/api/v1/users", strings.NewReader(`{"name":"mallory"}`))
	req.Header.Set("Authorization", "Bearer "+relayKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("relay key creating a user: %s", resp.Status)
	}
}
