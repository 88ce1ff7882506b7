package httpproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/socks5"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// setup serves the proxy on loopback with a dialer that knows one
// service, "web" (an HTTP server saying hello), and refuses "denied".
func setup(t *testing.T) string {
	before := runtime.NumGoroutine()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Host, r.URL.Path)
	}))
	p := &Proxy{Dial: func(ctx context.Context, host string, port uint16) (net.Conn, error) {
		switch host {
		case "web":
			var d net.Dialer
			return d.DialContext(ctx, "tcp", web.Listener.Addr().String())
		case "denied":
			return nil, socks5.Errorf(socks5.ReplyNotAllowed, "refused by policy")
		}
		return nil, socks5.Errorf(socks5.ReplyHostUnreachable, "no such name")
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := p.Server()
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		p.CloseTunnels()
		web.Close()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		wait.For(t, 10*time.Second, "the proxy's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	})
	return l.Addr().String()
}

func client(proxy string) *http.Client {
	u, _ := url.Parse("http://" + proxy)
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}}
}

func TestPlainHTTPForward(t *testing.T) {
	proxy := setup(t)
	resp, err := client(proxy).Get("http://web:8080/page")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello web:8080 /page" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
	for host, want := range map[string]string{"denied": "refused by policy", "nosuchnode": "no such name"} {
		resp, err := client(proxy).Get("http://" + host + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %d %q", host, resp.StatusCode, b)
		}
	}
}

func TestConnectTunnel(t *testing.T) {
	proxy := setup(t)
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\nGET /in HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	inner, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(inner.Body)
	if string(b) != "hello web /in" {
		t.Fatalf("through the tunnel: %q", b)
	}
	c2, _ := net.Dial("tcp", proxy)
	defer c2.Close()
	fmt.Fprintf(c2, "CONNECT denied:443 HTTP/1.1\r\nHost: denied:443\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("CONNECT denied: %v %v", resp, err)
	}
}

// TestOriginFormRefused: a request meant for a server (as a browser sends
// after DNS rebinding) is not proxied.
func TestOriginFormRefused(t *testing.T) {
	proxy := setup(t)
	resp, err := http.Get("http://" + proxy + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("origin-form request: %d", resp.StatusCode)
	}
}
