package cli

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// raiseNoFile lifts the soft RLIMIT_NOFILE to at least n (both ends of
// every connection are in this process).
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	old := lim
	lim.Cur = n
	if lim.Max < n {
		lim.Max = n
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("RLIMIT_NOFILE %d: %v", n, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// keepAlive opens a connection from src, makes one request for the key
// and leaves the connection idle (keep-alive). It returns the connection
// and the answer's status (0: none, the connection was refused at accept).
func keepAlive(t *testing.T, src, addr string) (net.Conn, int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET /warren/v1/key HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return c, 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c, resp.StatusCode
}

// TestServerHoldsIdleConnections: 2,000 idle keep-alive connections from
// eight source addresses do not hold a goroutine each for ever: at most
// --max-conns-per-ip per source are accepted, the server still answers a
// legitimate client, and once the attacker lets go the goroutines return.
func TestServerHoldsIdleConnections(t *testing.T) {
	raiseNoFile(t, 8192)
	const perIP, sources, total = 100, 8, 2000
	ts := startServer(t, t.TempDir(), "--max-conns-per-ip", fmt.Sprint(perIP))
	addr := strings.TrimPrefix(ts.url, "http://")
	base := runtime.NumGoroutine()
	bound := base + sources*perIP + 100
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	served, maxG := 0, 0
	for i := range total {
		c, code := keepAlive(t, fmt.Sprintf("127.0.0.%d", 2+i%sources), addr)
		held = append(held, c)
		if code == http.StatusOK {
			served++
		}
		if i%100 == 99 {
			maxG = max(maxG, runtime.NumGoroutine())
		}
	}
	maxG = max(maxG, runtime.NumGoroutine())
	t.Logf("%d of %d connections served; goroutines %d at start, at most %d while held (bound %d)", served, total, base, maxG, bound)
	if maxG > bound {
		t.Errorf("goroutines grew to %d with %d idle connections held, bound %d", maxG, total, bound)
	}
	// A legitimate client from another address is served.
	hc := &http.Client{Timeout: 30 * time.Second}
	start := time.Now()
	resp, err := hc.Get(ts.url + "/warren/v1/key")
	t.Logf("legitimate client answered in %v", time.Since(start))
	if err != nil {
		t.Fatalf("legitimate client: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("legitimate client: %s", resp.Status)
	}
	hc.CloseIdleConnections()
	for _, c := range held {
		c.Close()
	}
	held = nil
	wait.For(t, 30*time.Second, "goroutines back to the start", func() bool { return runtime.NumGoroutine() <= base+20 })
}

// TestServerCutsSlowBody: a client that sends a request body slowly (here:
// part of it, then nothing) is cut off after the read timeout instead of
// holding its connection and goroutine for ever.
func TestServerCutsSlowBody(t *testing.T) {
	defer func(o timeoutsConfig) { publicTimeouts = o }(publicTimeouts)
	publicTimeouts.Read = time.Second
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir)
	apiKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir))
	addr := strings.TrimPrefix(ts.url, "http://")
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /api/v1/users HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\":", addr, apiKey)
	// The check is that the server lets go at all; the deadline only
	// keeps a failing test from hanging.
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("slow body held: %v (read %q)", err, rest)
	}
	t.Logf("server answered the slow body with %q", strings.SplitN(string(rest), "\r\n", 2)[0])
}

// TestRelayLimitsConnections: the standalone relay caps connections per
// source address and closes idle keep-alive connections.
func TestRelayLimitsConnections(t *testing.T) {
	defer func(o timeoutsConfig) { publicTimeouts = o }(publicTimeouts)
	publicTimeouts.Idle = 500 * time.Millisecond
	rurl := startRelayWithServer(t, "--max-conns-per-ip", "2")
	addr := strings.TrimPrefix(rurl, "http://")
	// keepAlive asks for the key path, which the relay does not serve:
	// a 404 on a kept-alive connection.
	var held []net.Conn
	for range 2 {
		c, code := keepAlive(t, "127.0.0.5", addr)
		defer c.Close()
		if code != http.StatusNotFound {
			t.Fatalf("connection under the cap: status %d, want 404", code)
		}
		held = append(held, c)
	}
	over, code := keepAlive(t, "127.0.0.5", addr)
	defer over.Close()
	if code != 0 {
		t.Fatalf("a third connection from one address was answered (%d) with a cap of 2", code)
	}
	other, code := keepAlive(t, "127.0.0.6", addr)
	defer other.Close()
	if code != http.StatusNotFound {
		t.Fatalf("another address: status %d, want 404", code)
	}
	// The idle ones are closed by the relay (the deadline only keeps a
	// failing test from hanging).
	for i, c := range held {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("idle connection %d: %v, want EOF from the relay", i, err)
		}
	}
}
