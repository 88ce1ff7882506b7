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

// TestServerACMEEndToEnd: `warren server --tls-acme NAME` (the real
// binary) obtains its certificate from pebble with TLS-ALPN-01 on its own
// listener, caches it in DATA_DIR/acme, serves it (its Host check serves
// the name), and serves the renewed certificate without a restart.
func TestServerACMEEndToEnd(t *testing.T) {
	bin, err := buildWarren()
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := freePort(t)
	p := startPebble(t, freePort(t), tlsPort, 30*time.Second)
	data := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	cmd := exec.Command(bin, "server", "--data-dir", data, "--listen", addr, "--tls-acme", testName,
		"--tls-acme-directory", fmt.Sprintf("https://localhost:%d/dir", p.apiPort))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARREN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "SSL_CERT") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+p.caFile) // the server trusts pebble's API certificate
	out := &lockedBuffer{}
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
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	if exitErr != nil {
		t.Fatalf("server exit: %v", exitErr)
	}
}
