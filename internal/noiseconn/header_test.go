package noiseconn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// endlessHeaderServer answers every connection with the start of a
// response (status line first) and then header bytes without end: as
// many header lines as it can (lines) or one line that never ends. It
// stops after limit bytes and holds the connection open, so an unbounded
// client cannot eat the machine's memory while the test fails. It returns
// the address and a counter of the bytes written.
func endlessHeaderServer(t *testing.T, status string, oneLine bool, limit int64) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var written atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				n, _ := c.Write([]byte(status + "\r\n"))
				written.Add(int64(n))
				chunk := []byte("X-Junk: " + strings.Repeat("a", 4000) + "\r\n")
				if oneLine {
					chunk = []byte(strings.Repeat("a", 4096))
				}
				for written.Load() < limit {
					n, err := c.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
				c.SetReadDeadline(time.Now().Add(time.Minute))
				br.ReadByte() // hold until the client gives up
			}()
		}
	}()
	return ln.Addr().String(), &written
}

// TestDialBoundsResponseHeader: the upgrade response (control and relay
// protocols, and an HTTP proxy's CONNECT answer) is read before anything
// is authenticated; a server that sends an endless header makes Dial fail
// with a clear error after a bounded number of bytes, not grow without
// bound until the deadline.
func TestDialBoundsResponseHeader(t *testing.T) {
	k := genKey(t)
	const limit = 64 << 20
	relayProto := Protocol{Path: "/warren/v1/relay", UpgradeToken: "warren-relay-v1", Name: "warren relay v1"}
	for _, c := range []struct {
		name    string
		status  string
		oneLine bool
		proxy   bool
		proto   Protocol
	}{
		{"control, many lines", "HTTP/1.1 101 Switching Protocols", false, false, Control},
		{"control, one endless line", "HTTP/1.1 101 Switching Protocols", true, false, Control},
		{"control, refusal", "HTTP/1.1 403 Forbidden", false, false, Control},
		{"relay, many lines", "HTTP/1.1 101 Switching Protocols", false, false, relayProto},
		{"relay, endless status line", "HTTP/1.1 101 Switching", true, false, relayProto},
		{"proxy CONNECT", "HTTP/1.1 200 Connection established", false, true, Control},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, written := endlessHeaderServer(t, c.status, c.oneLine, limit)
			o := DialOptions{Protocol: c.proto}
			target := "http://" + addr
			if c.proxy {
				o.Proxy = func(*http.Request) (*url.URL, error) { return &url.URL{Scheme: "http", Host: addr}, nil }
				target = "http://192.0.2.1:8080"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := DialWith(ctx, o, target, k.PublicKey(), k)
			if err == nil {
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, ErrResponseTooLarge) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %.300s, want %v", err, ErrResponseTooLarge)
			}
			t.Logf("%v", err)
			if !strings.Contains(err.Error(), "response header is over") || len(err.Error()) > 300 {
				t.Fatalf("err = %v: not clear", err)
			}
			if w := written.Load(); w >= limit {
				t.Fatalf("the client read %d bytes of header", w)
			}
		})
	}
}

// TestUpgradedConnOutlivesServerTimeouts: public listeners set read, write
// and idle timeouts; a connection upgraded to a session (control stream,
// relay session) is long-lived and must keep none of them.
func TestUpgradedConnOutlivesServerTimeouts(t *testing.T) {
	key := genKey(t)
	mux := http.NewServeMux()
	mux.Handle(Path, &Server{Key: key, Handle: echo})
	ts := httptest.NewUnstartedServer(mux)
	const d = 200 * time.Millisecond
	ts.Config.ReadHeaderTimeout, ts.Config.ReadTimeout, ts.Config.WriteTimeout, ts.Config.IdleTimeout = d, d, d, d
	ts.Start()
	defer ts.Close()
	ck := genKey(t)
	c, err := Dial(ctxT(t), ts.URL, key.PublicKey(), ck)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	roundTrip := func() {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
			t.Fatalf("echo after %v: %q %v", time.Since(start), b, err)
		}
	}
	roundTrip()
	// Deadlines are absolute: once this much time has passed any the
	// server left on the connection has fired, however loaded the machine.
	time.Sleep(5 * d)
	roundTrip()
}

// TestFetchKeyMisdirected: a server that does not answer to the name in
// the node's URL says so (421, package httpguard); the node's error
// carries that line, which says how to add the name.
func TestFetchKeyMisdirected(t *testing.T) {
	const msg = `host "vpn.example.com:8080" is not served here (DNS rebinding protection); add the name with --public-url or --allowed-hosts`
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusMisdirectedRequest)
		io.WriteString(w, msg+"\n")
	}))
	defer ts.Close()
	_, err := FetchKey(ctxT(t), ts.URL)
	if err == nil || !strings.Contains(err.Error(), "--allowed-hosts") || !strings.Contains(err.Error(), "421") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}
