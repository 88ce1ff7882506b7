package cli

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/warrenmesh/warren/internal/store/storetest"
)

// cutProxy forwards connections to a server until it is cut: then it
// closes every connection and refuses new ones, as a server that went
// away would, until restored. It makes "the database (or the server) is
// gone" deterministic without stopping a server other tests share, and
// without giving up a port another process could then take.
type cutProxy struct {
	l      net.Listener
	target func() (net.Conn, error)

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

// newPGProxy proxies dsn's server and returns the DSN that goes through
// the proxy: over a unix socket (host=/dir, as storetest's servers) or TCP.
func newPGProxy(t *testing.T, dsn string) (*cutProxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	p := &cutProxy{conns: map[net.Conn]bool{}}
	if dir := q.Get("host"); strings.HasPrefix(dir, "/") {
		port := q.Get("port")
		if port == "" {
			port = "5432"
		}
		real := filepath.Join(dir, ".s.PGSQL."+port)
		pdir, err := os.MkdirTemp("", "warren-pgproxy-") // short: unix socket paths are limited
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(pdir) })
		if p.l, err = net.Listen("unix", filepath.Join(pdir, ".s.PGSQL."+port)); err != nil {
			t.Fatal(err)
		}
		p.target = func() (net.Conn, error) { return net.Dial("unix", real) }
		q.Set("host", pdir)
		u.RawQuery = q.Encode()
	} else {
		real := u.Host
		if p.l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		p.target = func() (net.Conn, error) { return net.Dial("tcp", real) }
		u.Host = p.l.Addr().String()
	}
	t.Cleanup(func() { p.l.Close(); p.setCut(true) })
	go p.serve()
	return p, u.String()
}

// newTCPCutProxy proxies the TCP address target on a loopback port.
func newTCPCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, conns: map[net.Conn]bool{}, target: func() (net.Conn, error) { return net.Dial("tcp", target) }}
	t.Cleanup(func() { p.l.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = true
		p.mu.Unlock()
		go func() {
			defer p.drop(c)
			s, err := p.target()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[s] = true
			p.mu.Unlock()
			defer p.drop(s)
			go func() { io.Copy(s, c); s.Close() }()
			io.Copy(c, s)
		}()
	}
}

func (p *cutProxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// setCut cuts (closing every connection) or restores the proxy.
func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// TestServerReadyzPostgres: with PostgreSQL as the store, /readyz fails
// with the reason while the database cannot be reached and recovers when
// it can again. (Runs when WARREN_TEST_POSTGRES names a server.)
func TestServerReadyzPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	proxy, viaProxy := newPGProxy(t, dsn)
	ts := startServer(t, filepath.Join(t.TempDir(), "data"), "--db", viaProxy)
	if code, body := get(t, ts.url+readyPath, ""); code != 200 || body != "ok\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	proxy.setCut(true)
	code, body := get(t, ts.url+readyPath, "")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the database gone: %d %q", code, body)
	}
	oneLineReason(t, body, "store unreachable")
	if code, body := get(t, ts.url+healthPath, ""); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz with the database gone: %d %q", code, body)
	}
	proxy.setCut(false)
	waitStatus(t, ts.url+readyPath, http.StatusOK)
}
