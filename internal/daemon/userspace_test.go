package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/socks5"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// socksAsk sends one SOCKS5 CONNECT request (raw bytes after the
// greeting) and returns the reply code, or -1 if the server closed first.
func socksAsk(t *testing.T, addr string, req []byte) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method selection: %v %v", m, err)
	}
	c.Write(req)
	var r [4]byte
	if _, err := io.ReadFull(c, r[:]); err != nil {
		return -1
	}
	return int(r[1])
}

func socksName(name string, port uint16) []byte {
	b := append([]byte{5, 1, 0, 3, byte(len(name))}, name...)
	return append(b, byte(port>>8), byte(port))
}

func socksIP(a netip.Addr, port uint16) []byte {
	b := []byte{5, 1, 0, 1}
	if a.Is6() {
		b[3] = 4
	}
	b = append(b, a.AsSlice()...)
	return append(b, byte(port>>8), byte(port))
}

// TestUserspaceProxiesBadInput runs a real userspace daemon in process
// (netstack and engine, UDP on an ephemeral port; no root, no TUN) joined
// to a control server, with one peer that never answers (a control
// client only: what it is sent goes nowhere, as when its policy drops
// it). Every bad request to the SOCKS5 proxy gets its RFC 1928 reply and
// every one to the HTTP proxy its error status, and when the daemon
// stops no goroutine is left behind.
func TestUserspaceProxiesBadInput(t *testing.T) {
	cs := startServer(t)
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	log, _ := logtest.New()
	d, err := New(Config{StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "warren.sock"),
		Userspace: true, SOCKS5: "127.0.0.1:0", HTTPProxy: "127.0.0.1:0", ForwardInbound: true,
		ProxyDialTimeout: 300 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- d.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("daemon: %v", err)
			}
		}
	}
	defer stop()
	if _, err := d.Up(context.Background(), localapi.UpRequest{ServerURL: cs.URL(), AuthKey: cs.ReusableKey, Hostname: "us"}); err != nil {
		t.Fatal(err)
	}
	p := joinPeer(t, cs, "silent")
	peerIP := p.self.Addresses[0].Addr()
	wait.For(t, waitLong, "the peer in the map", func() bool { return d.routable(peerIP) })
	socks, proxy := d.us.lns[0].Addr().String(), d.us.lns[1].Addr().String()

	for _, tc := range []struct {
		name string
		req  []byte
		want byte
	}{
		{"unknown address type", []byte{5, 1, 0, 7, 1, 2, 3, 4, 0, 80}, socks5.ReplyAddrNotSupported},
		{"malformed name", socksName("bad..name", 80), socks5.ReplyHostUnreachable},
		{"unknown name", socksName("nosuchnode", 80), socks5.ReplyHostUnreachable},
		{"address off the mesh", socksIP(netip.MustParseAddr("192.0.2.1"), 80), socks5.ReplyNetworkUnreachable},
		{"peer that never answers, by name", socksName("silent", 80), socks5.ReplyHostUnreachable},
		{"peer that never answers, by address", socksIP(peerIP, 80), socks5.ReplyHostUnreachable},
		{"BIND", []byte{5, 2, 0, 1, 1, 2, 3, 4, 0, 80}, socks5.ReplyCommandNotSupported},
	} {
		if got := socksAsk(t, socks, tc.req); got != int(tc.want) {
			t.Errorf("%s: reply %d, want %d", tc.name, got, tc.want)
		}
	}

	pu, _ := url.Parse("http://" + proxy)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}}
	for target, want := range map[string]int{
		"http://nosuchnode/":              http.StatusBadGateway,
		"http://192.0.2.1/":               http.StatusBadGateway,
		"http://silent/":                  http.StatusBadGateway,
		fmt.Sprintf("http://%s/", peerIP): http.StatusBadGateway,
	} {
		resp, err := hc.Get(target)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.HasPrefix(string(b), "warren proxy: ") {
			t.Errorf("%s: %d %q, want %d", target, resp.StatusCode, b, want)
		}
	}

	// The userspace device's counters are metrics: the SYNs to the
	// silent peer went out through it.
	mfs, err := d.obs.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out float64
	for _, mf := range mfs {
		if mf.GetName() == "warren_netstack_out_packets_total" {
			out = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if out == 0 {
		t.Error("warren_netstack_out_packets_total is 0 or missing")
	}

	// A client that connects and says nothing holds a goroutine only
	// until the daemon stops.
	silent, err := net.Dial("tcp", socks)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	p.stop()
	stop()
	// The server key was fetched over the default transport (as in TUN
	// mode); its idle connection is not the proxies'.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if !wait.Poll(10*time.Second, func() bool { return runtime.NumGoroutine() <= before }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
	}
}

// TestUserspaceFlagsChecked: the proxies need --userspace and a loopback
// address; each refusal names the flag.
func TestUserspaceFlagsChecked(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{SOCKS5: "127.0.0.1:1055"}, "need --userspace"},
		{Config{ForwardInbound: true}, "need --userspace"},
		{Config{Userspace: true, SOCKS5: "0.0.0.0:1055"}, "--socks5 \"0.0.0.0:1055\": only a loopback address"},
		{Config{Userspace: true, HTTPProxy: "198.18.0.1:1056"}, "--http-proxy \"198.18.0.1:1056\": only a loopback address"},
		{Config{Userspace: true, HTTPProxy: "localhost:1056"}, "--http-proxy \"localhost:1056\": want IP:PORT"},
	} {
		tc.cfg.StateDir = dir
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := New(Config{StateDir: dir, Userspace: true, SOCKS5: "[::1]:1055", HTTPProxy: "127.0.0.1:1056", ForwardInbound: true}); err != nil {
		t.Fatal(err)
	}
}
