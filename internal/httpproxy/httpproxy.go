// Package httpproxy is the userspace daemon's HTTP proxy: CONNECT tunnels
// (any TCP, usually TLS) and plain-HTTP forwarding of absolute-form
// requests, each dialed through the caller's Dial (the daemon resolves
// through MagicDNS and dials through its netstack).
//
// Only proxy requests are served: a request in origin form ("GET /path",
// what a browser sends to a server it believes it reached, as after DNS
// rebinding) is refused, so a web page cannot use the proxy as a server.
package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/socks5"
)

// Proxy is an http.Handler for proxy requests.
type Proxy struct {
	// Dial connects to host:port. A *socks5.ReplyError's message is
	// shown to the client in the 502 it gets.
	Dial        func(ctx context.Context, host string, port uint16) (net.Conn, error)
	DialTimeout time.Duration // default 30 s
	Logger      *slog.Logger

	once sync.Once
	rp   *httputil.ReverseProxy
	tr   *http.Transport

	mu     sync.Mutex
	tunnel map[net.Conn]struct{}
}

func (p *Proxy) dialTimeout() time.Duration {
	if p.DialTimeout <= 0 {
		return 30 * time.Second
	}
	return p.DialTimeout
}

func (p *Proxy) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// dialAddr dials "host:port".
func (p *Proxy) dialAddr(ctx context.Context, addr string) (net.Conn, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("bad port %q", ps)
	}
	ctx, cancel := context.WithTimeout(ctx, p.dialTimeout())
	defer cancel()
	return p.Dial(ctx, host, uint16(port))
}

func (p *Proxy) init() {
	p.once.Do(func() {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return p.dialAddr(ctx, addr)
			},
			MaxIdleConns:          64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			ForceAttemptHTTP2:     false,
		}
		p.tr = tr
		p.rp = &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.Out.URL = r.In.URL
				r.Out.Host = r.In.Host
			},
			Transport: tr,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				p.fail(w, r.Host, err)
			},
		}
	})
}

func (p *Proxy) fail(w http.ResponseWriter, host string, err error) {
	p.log().Debug("http proxy: cannot reach", "host", host, "err", err)
	code := http.StatusBadGateway
	if errors.Is(err, context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	msg := err.Error()
	var re *socks5.ReplyError
	if errors.As(err, &re) {
		msg = re.Msg
	}
	http.Error(w, "warren proxy: "+host+": "+msg, code)
}

// ServeHTTP serves one proxy request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "warren proxy: only proxy requests (CONNECT, or an absolute http:// URL) are served", http.StatusBadRequest)
		return
	}
	p.init()
	p.rp.ServeHTTP(w, r)
}

func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	out, err := p.dialAddr(r.Context(), r.Host)
	if err != nil {
		p.fail(w, r.Host, err)
		return
	}
	rc := http.NewResponseController(w)
	c, brw, err := rc.Hijack()
	if err != nil {
		out.Close()
		http.Error(w, "warren proxy: cannot hijack", http.StatusInternalServerError)
		return
	}
	c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		c.Close()
		out.Close()
		return
	}
	// Bytes the client sent after its request, already buffered.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := out.Write(b); err != nil {
			c.Close()
			out.Close()
			return
		}
	}
	p.track(c, out, true)
	defer p.track(c, out, false)
	defer c.Close()
	defer out.Close()
	socks5.Splice(c, out)
}

func (p *Proxy) track(a, b net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tunnel == nil {
		p.tunnel = map[net.Conn]struct{}{}
	}
	if add {
		p.tunnel[a], p.tunnel[b] = struct{}{}, struct{}{}
	} else {
		delete(p.tunnel, a)
		delete(p.tunnel, b)
	}
}

// CloseTunnels cuts the CONNECT tunnels (hijacked connections, which
// http.Server.Close does not know) and the idle connections kept to
// destinations of plain-HTTP requests.
func (p *Proxy) CloseTunnels() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.tunnel {
		c.Close()
	}
	p.init()
	p.tr.CloseIdleConnections()
}

// Server returns an http.Server for p with timeouts.
func (p *Proxy) Server() *http.Server {
	return &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}
