package metrics

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/httpguard"
	"github.com/warrenmesh/warren/internal/httpguard/guardtest"
)

func hostStatus(t *testing.T, addr, method, host string, hdr map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+"/metrics", nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return guardtest.Status(t, "tcp", addr, req, host)
}

// TestServeChecksHost: a web page that rebinds a name to 127.0.0.1 cannot
// read the metrics (peer names, keys): only IP literals, localhost and the
// names given are served.
func TestServeChecksHost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := Serve(ctx, "127.0.0.1:0", prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)), "prom.example.org")
	if err != nil {
		t.Fatal(err)
	}
	addr := a.String()
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{addr, "localhost:" + port, "prom.example.org:" + port} {
		if code := hostStatus(t, addr, "GET", host, nil); code != http.StatusOK {
			t.Errorf("Host %q: %d, want 200", host, code)
		}
	}
	for _, host := range []string{"evil.example:" + port, "7f000001.rbndr.us:" + port, "localhost.evil.example"} {
		if code := hostStatus(t, addr, "GET", host, nil); code != http.StatusMisdirectedRequest {
			t.Errorf("Host %q: %d, want 421", host, code)
		}
	}
}

// TestServeNamedAsksAboutChangingNames: a node's metrics are reachable by
// its MagicDNS name (which changes while the listener runs), still not
// by any other name (before, the daemon's listener answered 421 to its
// own name).
func TestServeNamedAsksAboutChangingNames(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	own := "alpha.mesh.example"
	also := func(name string) bool { return name == own || name == "alpha" }
	a, err := ServeNamed(ctx, "127.0.0.1:0", prometheus.NewRegistry(), nil, also)
	if err != nil {
		t.Fatal(err)
	}
	addr := a.String()
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{"alpha.mesh.example:" + port, "ALPHA.mesh.example.", "alpha"} {
		if code := hostStatus(t, addr, "GET", host, nil); code != http.StatusOK {
			t.Errorf("Host %q: %d, want 200", host, code)
		}
	}
	own = "renamed.mesh.example"
	for _, host := range []string{"alpha.mesh.example:" + port, "beta.mesh.example", "evil.example"} {
		if code := hostStatus(t, addr, "GET", host, nil); code != http.StatusMisdirectedRequest {
			t.Errorf("Host %q: %d, want 421", host, code)
		}
	}
	if code := hostStatus(t, addr, "GET", "renamed.mesh.example", nil); code != http.StatusOK {
		t.Errorf("after the rename: %d, want 200", code)
	}
}

// TestServeTimesOutIdleConnections: a keep-alive connection that sends
// nothing more is closed by the listener (before, it was held for ever).
func TestServeTimesOutIdleConnections(t *testing.T) {
	defer func(o httpguard.Timeouts) { listenerTimeouts = o }(listenerTimeouts)
	listenerTimeouts.Idle = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := Serve(ctx, "127.0.0.1:0", prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", a.String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, _ := http.NewRequest("GET", "http://"+a.String()+"/metrics", nil)
	req.Write(c)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	// Now idle: the server must close the connection (generous bound,
	// the check is that it happens at all).
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF from the server", err)
	}
}
