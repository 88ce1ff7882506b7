package httpguard

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func TestAllowedHosts(t *testing.T) {
	g := New(Policy{Names: []string{"https://Control.Example.com:8443/base", "relay.example.net:443"},
		Also: func(n string) bool { return n == "a.warren.internal" }})
	for _, h := range []string{"127.0.0.1:9100", "127.0.0.1", "[::1]:9100", "[fd7a::1]", "100.64.0.2:41642",
		"localhost:9100", "LOCALHOST", "control.example.com", "control.example.com.:8443", "relay.example.net", "a.warren.internal:41642"} {
		if !g.Allowed(h) {
			t.Errorf("Host %q refused", h)
		}
	}
	for _, h := range []string{"", "evil.example", "evil.example:9100", "7f000001.rbndr.us:9100", "127.0.0.1.nip.io",
		"localhost.evil.example", "control.example.com.evil.example", "b.warren.internal", "x@127.0.0.1", "127.0.0.1/x"} {
		if g.Allowed(h) {
			t.Errorf("Host %q allowed", h)
		}
	}
}

func TestHandlerRefusesForeignHostAndCrossOrigin(t *testing.T) {
	log, rec := logtest.New()
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
		Policy{Names: []string{"server.example"}, Logger: log})
	cases := []struct {
		method, host string
		hdr          map[string]string
		want         int
	}{
		{"GET", "server.example:8080", nil, 200},
		{"GET", "127.0.0.1:8080", nil, 200},
		{"PUT", "127.0.0.1:8080", nil, 200},
		{"GET", "evil.example", nil, 421},
		{"PUT", "evil.example:8080", nil, 421},
		{"PUT", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"POST", "server.example", map[string]string{"Origin": "http://evil.example"}, 403},
		{"GET", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, 200},
		{"POST", "server.example", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, "http://x/p", nil)
		r.Host = c.host
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s Host %q %v: %d %q, want %d", c.method, c.host, c.hdr, w.Code, w.Body.String(), c.want)
		}
	}
	// The first refusal is logged (the next within seconds are only
	// counted), at warning level, naming the request.
	if r, ok := rec.Find("http: refused request"); !ok || r.Level != slog.LevelWarn || r.Attrs["method"] != "GET" ||
		r.Attrs["path"] != "/p" || !strings.Contains(r.Attrs["reason"], `host "evil.example" is not served here`) || r.Attrs["from"] == "" {
		t.Errorf("refusal logged as %v; all:\n%s", r, rec.Text())
	}
}

func TestLimitListenerPerSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	l := LimitListener(ln, 2, log)
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var srv []net.Conn
	for range 2 {
		dial("127.0.0.1")
		srv = append(srv, <-accepted)
	}
	over := dial("127.0.0.1")
	// The third from the same source is closed by the server...
	over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection over the cap was served")
	}
	wait.For(t, 5*time.Second, "refusal counted", func() bool { return l.Refused() == 1 })
	wait.For(t, 5*time.Second, "refusal logged", func() bool {
		r, ok := rec.Find("refusing connections")
		return ok && r.Level == slog.LevelWarn && r.Attrs["from"] == "127.0.0.1" && r.Attrs["open"] == "2"
	})
	// ...another source still gets in...
	dial("127.0.0.2")
	<-accepted
	// ...and closing one frees its place.
	srv[0].Close()
	srv[0].Close()
	if n := l.Open(netip.MustParseAddr("127.0.0.1")); n != 1 {
		t.Fatalf("open after close: %d, want 1", n)
	}
	dial("127.0.0.1")
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("freed place not reused")
	}
}
