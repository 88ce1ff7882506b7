package console_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/console"
	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// env is the server as `warren server` mounts it — control protocol,
// admin API and console on one mux — over a fresh SQLite store, on a real
// loopback listener.
type env struct {
	t       *testing.T
	st      *store.Store
	key     noise.PrivateKey
	srv     *server.Server
	con     *console.Console
	hs      *httptest.Server
	mux     *http.ServeMux
	calls   *recordingCaller // the console's calls of the admin API
	apiKey  string           // an admin API key
	user    *store.User
	authKey string
}

func newEnv(t *testing.T, opts console.Options) *env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "warren.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	logger := logtest.T(t)
	srv := server.New(st, key, server.Options{Logger: logger})
	t.Cleanup(func() { srv.Close() })
	api := admin.New(st, srv.Notify, admin.WithLogger(logger))
	calls := &recordingCaller{Caller: api}
	opts.Store, opts.API, opts.World, opts.Logger = st, calls, srv, logger
	con, err := console.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(con.Close)
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle(admin.Prefix, api)
	mux.Handle(console.Prefix, con)
	hs := httptest.NewServer(mux)
	hs.Config.RegisterOnShutdown(con.Close)
	t.Cleanup(hs.Close)
	t.Cleanup(con.Close) // runs before hs.Close: live streams end
	apiKey, _, err := st.CreateAPIKey(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.CreateUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	ak, _, err := st.CreatePreAuthKey(ctx, u.ID, store.PreAuthKeyOptions{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, st: st, key: key, srv: srv, con: con, hs: hs, mux: mux, calls: calls, apiKey: apiKey, user: u, authKey: ak}
}

// node is a node joined through the control protocol and kept online by
// its control client until stop.
type node struct {
	id     int64
	c      *client.Client
	cancel context.CancelFunc
	done   chan error
}

func (e *env) join(hostname string, routes ...string) *node {
	e.t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		e.t.Fatal(err)
	}
	var rs []netip.Prefix
	for _, r := range routes {
		rs = append(rs, netip.MustParsePrefix(r))
	}
	c, err := client.New(client.Config{ServerURL: e.hs.URL, ServerKey: pubkey.Server{PublicKey: e.key.PublicKey()}, NodeKey: k,
		Routes: rs, OS: "linux", Version: "1.2.3-test", MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	self, err := c.Register(ctx, e.authKey, hostname, nil)
	if err != nil {
		e.t.Fatalf("register %s: %v", hostname, err)
	}
	n := &node{id: int64(self.ID), c: c}
	n.start()
	e.t.Cleanup(n.stop)
	return n
}

// start runs the node's map stream (it goes online).
func (n *node) start() {
	rctx, rcancel := context.WithCancel(context.Background())
	n.cancel, n.done = rcancel, make(chan error, 1)
	go func() { n.done <- n.c.Run(rctx, func(*netmap.NetworkMap) {}) }()
}

func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
	n.cancel = nil
}

// browser is a plain HTTP client with a cookie jar that sends what a
// browser sends with a form of the console's own pages.
type browser struct {
	t *testing.T
	e *env
	c *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: e.t, e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req, err := http.NewRequest(method, b.e.hs.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			if !errors.Is(err, context.Canceled) && err.Error() != "EOF" {
				b.t.Logf("reading %s: %v", path, err)
			}
			break
		}
	}
	return resp, sb.String()
}

// sameOrigin are the headers a browser sends with a form of the console.
func (b *browser) sameOrigin() map[string]string {
	return map[string]string{"Origin": b.e.hs.URL, "Sec-Fetch-Site": "same-origin"}
}

func (b *browser) signIn(key string) *http.Response {
	b.t.Helper()
	resp, _ := b.do("POST", "/admin/signin", url.Values{"key": {key}}, b.sameOrigin())
	return resp
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the session's CSRF token from a page.
func (b *browser) csrf(path string) string {
	b.t.Helper()
	_, body := b.do("GET", path, nil, nil)
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("no CSRF token on %s:\n%s", path, body)
	}
	return m[1]
}

// recordingCaller is the admin API, remembering who each state-changing
// call was made for.
type recordingCaller struct {
	admin.Caller
	mu     sync.Mutex
	actors []string // "METHOD PATH ACTOR"
}

func (c *recordingCaller) Call(ctx context.Context, method, path string, body any) (int, []byte) {
	if method != http.MethodGet {
		c.mu.Lock()
		c.actors = append(c.actors, method+" "+path+" "+admin.ActorFrom(ctx))
		c.mu.Unlock()
	}
	return c.Caller.Call(ctx, method, path, body)
}

func (c *recordingCaller) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.actors...)
}
