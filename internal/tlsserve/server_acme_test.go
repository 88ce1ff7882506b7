package tlsserve

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// buildWarren builds the warren binary once per test binary, next to
// pebble.
var buildWarren = sync.OnceValues(func() (string, error) {
	if _, err := buildPebble(); err != nil { // makes pebbleDir
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(pebbleDir, "warren")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/warrenmesh/warren/cmd/warren").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building warren: %v\n%s", err, out)
	}
	return bin, nil
})

// runWarrenServer starts the warren binary as `warren server` with
// args, trusting pebble's API certificate (SSL_CERT_FILE); it is stopped
// at the end of the test. stop sends SIGTERM and returns the exit error.
func runWarrenServer(t *testing.T, p *pebble, args ...string) (out *lockedBuffer, stop func() error) {
	t.Helper()
	bin, err := buildWarren()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"server"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARREN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "SSL_CERT") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+p.caFile)
	out = &lockedBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("warren server's output:\n%s", out)
		}
	})
	return out, func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		return exitErr
	}
}

// TestServerACMEEndToEnd: `warren server --tls-acme NAME` (the real
// binary) obtains its certificate from pebble with TLS-ALPN-01 on its own
// listener, caches it in DATA_DIR/acme, serves it (its Host check serves
// the name), and serves the renewed certificate without a restart.
func TestServerACMEEndToEnd(t *testing.T) {
	tlsPort := freePort(t)
	p := startPebble(t, freePort(t), tlsPort, 30*time.Second)
	data := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	out, stop := runWarrenServer(t, p, "--data-dir", data, "--listen", addr, "--tls-acme", testName,
		"--tls-acme-directory", fmt.Sprintf("https://localhost:%d/dir", p.apiPort))
	wait.Until(t, "the server listening", func() bool { return strings.Contains(out.String(), "msg=listening") })
	if !strings.Contains(out.String(), "url=https://"+addr) {
		t.Fatalf("not https: %s", out)
	}
	var chain []*x509.Certificate
	wait.For(t, 90*time.Second, "a certificate from pebble served", func() bool {
		c, err := handshake(addr, p.roots)
		if err != nil {
			return false
		}
		chain = c
		return true
	})
	first := chain[0]
	if !slices.Contains(first.DNSNames, testName) || !strings.Contains(first.Issuer.CommonName, "Pebble") {
		t.Fatalf("served %v issued by %q", first.DNSNames, first.Issuer.CommonName)
	}
	if _, err := os.Stat(filepath.Join(data, ACMECacheDir, testName)); err != nil {
		t.Errorf("certificate not cached: %v", err)
	}
	// A client that trusts the CA reaches the server by its name.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: p.client.Transport.(*http.Transport).TLSClientConfig.Clone(),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	hc.Transport.(*http.Transport).TLSClientConfig.RootCAs = p.roots
	hc.Transport.(*http.Transport).TLSClientConfig.ServerName = testName
	resp, err := hc.Get("https://" + testName + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("https://%s/healthz: %s", testName, resp.Status)
	}
	wait.For(t, 90*time.Second, "the renewed certificate served", func() bool {
		c, err := handshake(addr, p.roots)
		return err == nil && c[0].SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if err := stop(); err != nil {
		t.Fatalf("server exit: %v", err)
	}
}

// TestServerACMEHTTP01EndToEnd: with TLS-ALPN-01 impossible (pebble
// validates it on a port nothing listens on), `warren server
// --tls-acme-http-listen ADDR` answers HTTP-01 there and gets its
// certificate; other requests on that listener are redirected to https.
func TestServerACMEHTTP01EndToEnd(t *testing.T) {
	httpPort := freePort(t)
	p := startPebble(t, httpPort, freePort(t), time.Hour)
	addr, httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", httpPort)
	out, stop := runWarrenServer(t, p, "--data-dir", t.TempDir(), "--listen", addr, "--tls-acme", testName,
		"--tls-acme-directory", fmt.Sprintf("https://localhost:%d/dir", p.apiPort), "--tls-acme-http-listen", httpAddr)
	wait.Until(t, "the HTTP-01 listener", func() bool { return strings.Contains(out.String(), "url=http://"+httpAddr) })
	var chain []*x509.Certificate
	wait.For(t, 90*time.Second, "a certificate from pebble served", func() bool {
		c, err := handshake(addr, p.roots)
		chain = c
		return err == nil
	})
	if !slices.Contains(chain[0].DNSNames, testName) {
		t.Fatalf("served %v", chain[0].DNSNames)
	}
	if !strings.Contains(p.out.String(), "Attempting to validate w/ HTTP: http://"+testName) {
		t.Error("pebble did not validate HTTP-01")
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/x", nil)
	req.Host = testName
	resp, err := (&http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://"+testName+"/x" {
		t.Errorf("plain request: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if err := stop(); err != nil {
		t.Fatalf("server exit: %v", err)
	}
}
