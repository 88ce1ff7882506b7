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

	"warren/internal/nettest"
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
// and whether the server answered (false: refused at accept).
func keepAlive(t *testing.T, src, addr string) (net.Conn, bool) {
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
		return c, false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c, resp.StatusCode == http.StatusOK
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
		c, ok := keepAlive(t, fmt.Sprintf("127.0.0.%d", 2+i%sources), addr)
		held = append(held, c)
		if ok {
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
	resp, err := hc.Get(ts.url + "/warren/v1/key")
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
	nettest.WaitFor(t, 30*time.Second, "goroutines back to the start", func() bool { return runtime.NumGoroutine() <= base+20 })
}

// TestServerCutsSlowBody: a client that sends a request body slowly (here:
// part of it, then nothing) is cut off after the read timeout instead of
// holding its connection and goroutine for ever.
func TestServerCutsSlowBody(t *testing.T) {
	defer func(o timeoutsConfig) { publicTimeouts = o }(publicTimeouts)
	publicTimeouts.Read = time.Second
	dir := filepath.Join(t.TempDir(), "data")
	apiKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir))
	ts := startServer(t, dir)
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
