package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/store/storetest"
)

// env is the admin API over a real store, behind a real HTTP server.
type env struct {
	t        *testing.T
	st       *store.Store
	hs       *httptest.Server
	key      string // a valid admin API key
	notified atomic.Int64
}

// eachBackend runs f once per backend with a fresh env.
func eachBackend(t *testing.T, f func(t *testing.T, e *env)) {
	for _, b := range storetest.Backends(t) {
		name, dsn := b.Name, b.DSN
		t.Run(name, func(t *testing.T) { f(t, newEnv(t, dsn(t))) })
	}
}

func newEnv(t *testing.T, dsn string) *env {
	t.Helper()
	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, _, err := st.CreateAPIKey(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, key: key}
	mux := http.NewServeMux()
	mux.Handle(admin.Prefix, admin.New(st, func() { e.notified.Add(1) }))
	e.hs = httptest.NewServer(mux)
	t.Cleanup(e.hs.Close)
	return e
}

// call sends a request with the env's key and returns status and body.
func (e *env) call(method, path, body string) (int, string) {
	e.t.Helper()
	return e.callKey(e.key, method, path, body)
}

func (e *env) callKey(key, method, path, body string) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.hs.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// must expects status code and decodes the body into v (if not nil).
func (e *env) must(code int, v any, method, path, body string) {
	e.t.Helper()
	got, b := e.call(method, path, body)
	if got != code {
		e.t.Fatalf("%s %s %s: status %d, body %s; want %d", method, path, body, got, b, code)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(b), v); err != nil {
			e.t.Fatalf("%s %s: decoding %q: %v", method, path, b, err)
		}
	}
}

// fails expects an error status whose one-line message contains msg.
func (e *env) fails(code int, msg, method, path, body string) {
	e.t.Helper()
	got, b := e.call(method, path, body)
	checkErr(e.t, got, b, code, msg)
}

func checkErr(t *testing.T, got int, b string, code int, msg string) {
	t.Helper()
	var eb struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || got != code || !strings.Contains(eb.Error, msg) || strings.Contains(eb.Error, "\n") {
		t.Fatalf("status %d body %q; want %d and an error containing %q", got, b, code, msg)
	}
}

// addNode registers a node directly in the store, as the control server would.
func (e *env) addNode(user, hostname string) *store.Node {
	e.t.Helper()
	ctx := context.Background()
	u, err := e.st.GetUserByName(ctx, user)
	if err != nil {
		e.t.Fatal(err)
	}
	k, _, err := e.st.CreatePreAuthKey(ctx, u.ID, store.PreAuthKeyOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	nk, err := noise.GeneratePrivateKey()
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := e.st.RegisterNode(ctx, k, pubkey.Node{PublicKey: nk.PublicKey()}, hostname, store.RegisterOptions{Endpoints: []string{"192.0.2.1:41641"}})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// notifiedSince asserts notify was (or was not) called since the count n0.
func (e *env) notifiedSince(n0 int64, want bool, what string) int64 {
	e.t.Helper()
	n := e.notified.Load()
	if (n > n0) != want {
		e.t.Fatalf("%s: notify called %d times, want called=%v", what, n-n0, want)
	}
	return n
}

func storeOpts() store.RegisterOptions { return store.RegisterOptions{} }

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
