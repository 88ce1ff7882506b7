package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/sdnotify"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// get fetches url (with Host host when set) and returns status and body.
func get(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitStatus polls url until it answers want and returns the body.
func waitStatus(t *testing.T, url string, want int) string {
	t.Helper()
	var code int
	var body string
	wait.For(t, 15*time.Second, url+" answering "+http.StatusText(want), func() bool {
		code, body = get(t, url, "")
		return code == want
	})
	return body
}

// oneLineReason checks a 503 body: one line, "not ready: " and the reason.
func oneLineReason(t *testing.T, body, want string) {
	t.Helper()
	if !strings.HasPrefix(body, "not ready: ") || strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") || !strings.Contains(body, want) {
		t.Fatalf("503 body %q: want one line \"not ready: ...%s...\"", body, want)
	}
}

// TestServerReadyz: /readyz fails with the reason while the SQLite
// database file is gone and recovers when it is back; /healthz stays ok;
// both sit behind the Host check.
func TestServerReadyz(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir)
	for _, p := range []string{healthPath, readyPath} {
		if code, body := get(t, ts.url+p, ""); code != 200 || body != "ok\n" {
			t.Fatalf("%s: %d %q", p, code, body)
		}
	}
	if code, _ := get(t, ts.url+readyPath, "evil.example"); code == 200 {
		t.Fatal("/readyz answered a foreign Host")
	}
	db := filepath.Join(dir, "warren.db")
	if err := os.Rename(db, db+".away"); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, ts.url+readyPath, "")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the store gone: %d %q", code, body)
	}
	// The reason in fixed words for anyone; the detail (a path) only in
	// the log, once.
	oneLineReason(t, body, "store unreachable")
	if strings.Contains(body, dir) {
		t.Fatalf("/readyz tells a stranger the data path: %q", body)
	}
	get(t, ts.url+readyPath, "")
	if logs := ts.stderr.String(); strings.Count(logs, "database file "+db+" is gone") != 1 {
		t.Fatalf("the detail is not logged once:\n%s", logs)
	}
	if code, body := get(t, ts.url+healthPath, ""); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz with the store gone: %d %q", code, body)
	}
	if err := os.Rename(db+".away", db); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, ts.url+readyPath, ""); code != 200 || body != "ok\n" {
		t.Fatalf("/readyz with the store back: %d %q", code, body)
	}
	if !strings.Contains(ts.stderr.String(), "ready again") {
		t.Fatalf("recovery not logged:\n%s", ts.stderr.String())
	}
}

// TestRelayReadyz: a standalone relay is ready while the server vouching
// for its nodes answers, not while it cannot be reached (a proxy in front
// of it is cut), and again once it can.
func TestRelayReadyz(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir)
	relayKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--scope", "relay", "--data-dir", dir))
	proxy := newTCPCutProxy(t, strings.TrimPrefix(ts.url, "http://"))
	fs, rc := relayFlags()
	if err := fs.Parse([]string{"--listen", "127.0.0.1:0", "--stun-listen", "", "--data-dir", filepath.Join(t.TempDir(), "relay"),
		"--server", "http://" + proxy.l.Addr().String(), "--relay-key", relayKey, "--poll", "100ms"}); err != nil {
		t.Fatal(err)
	}
	if err := rc.check(); err != nil {
		t.Fatal(err)
	}
	rurl, _, _ := startRelayCmd(t, rc)
	if code, body := get(t, rurl+readyPath, ""); code != 200 || body != "ok\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	proxy.setCut(true)
	oneLineReason(t, waitStatus(t, rurl+readyPath, http.StatusServiceUnavailable), "vouching server unreachable")
	if code, body := get(t, rurl+healthPath, ""); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz with the server away: %d %q", code, body)
	}
	proxy.setCut(false)
	waitStatus(t, rurl+readyPath, http.StatusOK)
}

// notifySocket binds a unixgram socket as $NOTIFY_SOCKET with a watchdog
// of 200ms and returns a function reading the next message.
func notifySocket(t *testing.T) func() string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	return func() string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		b := make([]byte, 256)
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("no sd_notify message: %v", err)
		}
		return string(b[:n])
	}
}

// expectNotify reads READY=1, then keep-alives (each one a /healthz the
// service answered itself), then after stop STOPPING=1.
func expectNotify(t *testing.T, next func() string, stop func()) {
	t.Helper()
	if got := next(); got != sdnotify.Ready {
		t.Fatalf("first message %q, want %s", got, sdnotify.Ready)
	}
	for range 2 {
		if got := next(); got != sdnotify.Watchdog {
			t.Fatalf("got %q, want %s", got, sdnotify.Watchdog)
		}
	}
	stop()
	for {
		got := next()
		if got == sdnotify.Stopping {
			return
		}
		if got != sdnotify.Watchdog {
			t.Fatalf("got %q while stopping", got)
		}
	}
}

func TestServerNotifiesSystemd(t *testing.T) {
	next := notifySocket(t)
	ts := startServer(t, filepath.Join(t.TempDir(), "data"))
	expectNotify(t, next, func() { ts.stop() })
}

func TestRelayNotifiesSystemd(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir) // before $NOTIFY_SOCKET is set: only the relay notifies
	relayKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--scope", "relay", "--data-dir", dir))
	next := notifySocket(t)
	fs, rc := relayFlags()
	if err := fs.Parse([]string{"--listen", "127.0.0.1:0", "--stun-listen", "", "--data-dir", filepath.Join(t.TempDir(), "relay"),
		"--server", ts.url, "--relay-key", relayKey}); err != nil {
		t.Fatal(err)
	}
	if err := rc.check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &lockedBuffer{}
	done := make(chan int, 1)
	go func() { done <- serveRelay(ctx, rc, stderr) }()
	expectNotify(t, next, func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("relay exit %d: %s", code, stderr.String())
		}
	})
}

// The watchdog's self-probe works over HTTPS too (the certificate does not
// name the loopback address it dials).
func TestServerTLSNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"warren.example"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	next := notifySocket(t)
	ts := startServer(t, filepath.Join(dir, "data"), "--tls-cert", certPath, "--tls-key", keyPath)
	if !strings.HasPrefix(ts.url, "https://") {
		t.Fatalf("url %q", ts.url)
	}
	expectNotify(t, next, func() { ts.stop() })
}
