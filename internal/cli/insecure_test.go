package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/warrenmesh/warren/internal/localapi"
)

// TestKeyNotSentInClear: the admin CLI and the standalone relay refuse to
// send their bearer key over plain http to a host that is not loopback,
// unless --insecure. A recording HTTP proxy stands in for the network
// between them and the server: what crosses it in clear, it sees. (The
// commands run in a child process: Go reads the proxy environment once
// per process.)
func TestKeyNotSentInClear(t *testing.T) {
	if args := os.Getenv("WARREN_CLI_TEST_ARGS"); args != "" {
		var argv []string
		if err := json.Unmarshal([]byte(args), &argv); err != nil {
			panic(err)
		}
		os.Exit(run(argv, os.Stdout, os.Stderr))
	}
	var mu sync.Mutex
	var seen []string // Authorization headers that crossed the proxy
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "proxy: no upstream", http.StatusBadGateway)
	}))
	defer proxy.Close()
	run := func(args ...string) (int, string) {
		t.Helper()
		c := exec.Command(os.Args[0], "-test.run=^TestKeyNotSentInClear$")
		argv, _ := json.Marshal(args)
		c.Env = append(os.Environ(), "WARREN_CLI_TEST_ARGS="+string(argv), "HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL,
			"NO_PROXY=", "no_proxy=", envServer+"=", envAPIKey+"=", envRelayKey+"=")
		var stderr bytes.Buffer
		c.Stderr = &stderr
		err := c.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stderr.String()
	}
	crossed := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
	const apiKey = "wapi_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000"
	const relayKey = "wrly_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000"
	for _, args := range [][]string{
		{"admin", "--server", "http://warren.example:8080", "--api-key", apiKey, "users", "list"},
		{"admin", "--server", "198.51.100.7:8080", "--api-key", apiKey, "nodes", "list"},
		{"relay", "--server", "http://warren.example:8080", "--relay-key", relayKey, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--stun-listen", ""},
	} {
		code, errb := run(args...)
		if code != 2 || !strings.Contains(errb, "--insecure") || strings.Count(errb, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one line naming --insecure", args, code, errb)
		}
	}
	if got := crossed(); len(got) != 0 {
		t.Fatalf("keys crossed the network in clear: %q", got)
	}
	// --insecure sends it (the proxy proves it would have seen it).
	code, errb := run("admin", "--server", "http://warren.example:8080", "--api-key", apiKey, "--insecure", "users", "list")
	if got := crossed(); code != 1 || len(got) != 1 || got[0] != "Bearer "+apiKey {
		t.Fatalf("--insecure: exit %d, stderr %q, proxy saw %q", code, errb, got)
	}
}

// TestPlainHTTPKeyTransport: which server URLs a bearer key may be sent to.
func TestPlainHTTPKeyTransport(t *testing.T) {
	for _, tc := range []struct {
		url      string
		insecure bool
		ok       bool
	}{
		{"https://warren.example", false, true},
		{"https://198.51.100.7:8443", false, true},
		{"http://localhost:8080", false, true},
		{"http://LOCALHOST:8080", false, true},
		{"http://127.0.0.1:8080", false, true},
		{"http://127.8.9.10", false, true},
		{"http://[::1]:8080", false, true},
		{"http://198.18.1.2:8080", false, false},
		{"http://warren.example", false, false},
		{"http://localhost.warren.example", false, false},
		{"http://[2001:db8::1]:80", false, false},
		{"http://198.18.1.2:8080", true, true},
	} {
		u := mustParseURL(t, tc.url)
		err := checkKeyTransport(u, "--server", tc.insecure)
		if (err == nil) != tc.ok || (err != nil && (!strings.Contains(err.Error(), "--insecure") || strings.Contains(err.Error(), "\n"))) {
			t.Errorf("%s insecure=%v: %v", tc.url, tc.insecure, err)
		}
	}
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestReportPinnedKey: `up` prints the server key it pinned from the
// server's answer and warns (one line on stderr, naming --server-key) when
// that came over plain http; a key given with --server-key or already
// pinned is not reported.
func TestReportPinnedKey(t *testing.T) {
	const k = "2kKJ6uUMYwSymiZP5b2gDX0VDT+Xtni/Ri0y97iJTBg="
	for _, tc := range []struct {
		fetched      string
		json         bool
		out, warning bool
	}{
		{"http", false, true, true},
		{"http", true, false, true},
		{"https", false, true, false},
		{"", false, false, false},
	} {
		var out, errb bytes.Buffer
		reportPinnedKey(&localapi.Status{ServerURL: "http://198.18.1.2:8080", ServerKey: k, ServerKeyFetched: tc.fetched}, tc.json, &out, &errb)
		if strings.Contains(out.String(), k) != tc.out {
			t.Errorf("%+v: stdout %q", tc, out.String())
		}
		warned := strings.Contains(errb.String(), "plain http") && strings.Contains(errb.String(), "--server-key") && strings.Count(errb.String(), "\n") == 1
		if warned != tc.warning || (!tc.warning && errb.Len() > 0) {
			t.Errorf("%+v: stderr %q", tc, errb.String())
		}
	}
}
