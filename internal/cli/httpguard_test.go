package cli

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/httpguard/guardtest"
	"github.com/warrenmesh/warren/internal/relay"
)

// hostStatus sends one request for path to the listener at base (a URL)
// with the given Host header and extra headers, and returns the status.
func hostStatus(t *testing.T, base, method, path, host string, hdr map[string]string) int {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://"+u.Host+path, strings.NewReader(""))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return guardtest.Status(t, "tcp", u.Host, req, host)
}

// TestServerChecksHost: the server (control protocol, key, admin API,
// embedded relay) answers only for the hosts it serves: IP literals,
// localhost, its --public-url host and --allowed-hosts; a name a web page
// rebound to its address is refused, and so is a browser's cross-origin
// request that would change state.
func TestServerChecksHost(t *testing.T) {
	ts := startServer(t, t.TempDir(), "--relay", "--public-url", "http://control.example.com:8080",
		"--allowed-hosts", "warren.internal.example, other.example")
	addr := strings.TrimPrefix(ts.url, "http://")
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{addr, "localhost:" + port, "control.example.com:8080", "Control.Example.COM", "warren.internal.example", "other.example:443"} {
		if code := hostStatus(t, ts.url, "GET", "/warren/v1/key", host, nil); code != http.StatusOK {
			t.Errorf("key with Host %q: %d, want 200", host, code)
		}
	}
	for _, host := range []string{"evil.example", "evil.example:" + port, "7f000001.c0a80001.rbndr.us:" + port, "127.0.0.1.nip.io:" + port, "control.example.com.evil.example"} {
		for _, p := range []struct{ method, path string }{{"GET", "/warren/v1/key"}, {"GET", "/api/v1/users"}, {"POST", "/api/v1/users"}, {"POST", "/warren/v1/control"}, {"POST", relay.Path}} {
			if code := hostStatus(t, ts.url, p.method, p.path, host, nil); code != http.StatusMisdirectedRequest {
				t.Errorf("%s %s with Host %q: %d, want 421", p.method, p.path, host, code)
			}
		}
	}
	// Cross-origin browser request that changes state.
	if code := hostStatus(t, ts.url, "POST", "/api/v1/users", addr, map[string]string{"Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", code)
	}
	if code := hostStatus(t, ts.url, "POST", "/api/v1/users", addr, map[string]string{"Origin": "http://evil.example"}); code != http.StatusForbidden {
		t.Errorf("POST with a foreign Origin: %d, want 403", code)
	}
	// Without a key the admin API answers 401 to the legitimate host.
	if code := hostStatus(t, ts.url, "POST", "/api/v1/users", addr, nil); code != http.StatusUnauthorized {
		t.Errorf("POST without a key: %d, want 401", code)
	}
}

// TestRelayChecksHost: the standalone relay refuses a rebound name.
func TestRelayChecksHost(t *testing.T) {
	rurl := startRelayWithServer(t, "--allowed-hosts", "relay.example.net")
	addr := strings.TrimPrefix(rurl, "http://")
	_, port, _ := net.SplitHostPort(addr)
	// The legitimate hosts reach the relay handler, which wants an upgrade.
	for _, host := range []string{addr, "localhost:" + port, "relay.example.net:8443"} {
		if code := hostStatus(t, rurl, "POST", relay.Path, host, nil); code != http.StatusBadRequest {
			t.Errorf("relay with Host %q: %d, want 400 (no upgrade)", host, code)
		}
	}
	for _, host := range []string{"evil.example:" + port, "7f000001.rbndr.us"} {
		if code := hostStatus(t, rurl, "POST", relay.Path, host, nil); code != http.StatusMisdirectedRequest {
			t.Errorf("relay with Host %q: %d, want 421", host, code)
		}
	}
}
