package socks5

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// start serves SOCKS5 on loopback with dial, returning its address. It
// checks at cleanup that every goroutine it started has ended.
func start(t *testing.T, dial func(context.Context, *Request) (net.Conn, error), handshake time.Duration) string {
	before := runtime.NumGoroutine()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dial: dial, HandshakeTimeout: handshake}
	done := make(chan struct{})
	go func() { s.Serve(l); close(done) }()
	t.Cleanup(func() {
		l.Close()
		<-done
		s.Close()
		wait.For(t, 10*time.Second, "the server's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	})
	return l.Addr().String()
}

// connect greets and sends a raw request, returning the reply's code (or
// -1 when the server closed without one).
func connect(t *testing.T, addr string, req []byte) (net.Conn, int) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method selection: %v %v", m, err)
	}
	c.Write(req)
	var r [10]byte
	if _, err := io.ReadFull(c, r[:4]); err != nil {
		return c, -1
	}
	n := 6
	if r[3] == atypIPv6 {
		n = 18
	}
	rest := make([]byte, n)
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatalf("short reply: %v", err)
	}
	return c, int(r[1])
}

func domainReq(name string, port uint16) []byte {
	b := []byte{5, 1, 0, atypDomain, byte(len(name))}
	b = append(b, name...)
	return append(b, byte(port>>8), byte(port))
}

// meshDial is a stand-in for the daemon's dialer: "web" is a service
// (an echo server), "denied" is refused by policy, "slow" never answers
// until the dial's deadline, anything else is unknown.
func meshDial(t *testing.T) func(context.Context, *Request) (net.Conn, error) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return func(ctx context.Context, r *Request) (net.Conn, error) {
		switch r.Host() {
		case "web":
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echo.Addr().String())
		case "denied":
			return nil, Errorf(ReplyNotAllowed, "refused by policy")
		case "slow":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, Errorf(ReplyHostUnreachable, "no such name: "+r.Host())
	}
}

func TestConnectByNameSplices(t *testing.T) {
	addr := start(t, meshDial(t), 0)
	c, code := connect(t, addr, domainReq("web", 80))
	if code != int(ReplySucceeded) {
		t.Fatalf("reply %d", code)
	}
	msg := []byte("hello through the proxy")
	c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %q %v", got, err)
	}
}

// TestBadRequestsGetTheirReply: every refused request gets the RFC 1928
// reply code that names why, and no goroutine stays behind (start's
// cleanup).
func TestBadRequestsGetTheirReply(t *testing.T) {
	addr := start(t, meshDial(t), 0)
	for _, tc := range []struct {
		name string
		req  []byte
		want byte
	}{
		{"unknown name", domainReq("nosuchnode", 80), ReplyHostUnreachable},
		{"refused by policy", domainReq("denied", 80), ReplyNotAllowed},
		{"malformed name", domainReq("a..b", 80), ReplyHostUnreachable},
		{"name with a slash", domainReq("a/b", 80), ReplyHostUnreachable},
		{"empty name", domainReq("", 80), ReplyHostUnreachable},
		{"unknown address type", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, ReplyAddrNotSupported},
		{"BIND", []byte{5, 2, 0, atypIPv4, 1, 2, 3, 4, 0, 80}, ReplyCommandNotSupported},
		{"UDP ASSOCIATE", []byte{5, 3, 0, atypIPv4, 1, 2, 3, 4, 0, 80}, ReplyCommandNotSupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code := connect(t, addr, tc.req)
			if code != int(tc.want) {
				t.Fatalf("reply %d, want %d", code, tc.want)
			}
		})
	}
}

// TestDialTimeoutRepliesHostUnreachable: a destination that never answers
// (a peer whose policy drops the SYN) gets "host unreachable" once the
// dial's deadline passes.
func TestDialTimeoutRepliesHostUnreachable(t *testing.T) {
	dial := meshDial(t)
	before := runtime.NumGoroutine()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	s := &Server{Dial: dial, DialTimeout: time.Millisecond}
	go s.Serve(l)
	defer func() {
		l.Close()
		s.Close()
		wait.For(t, 10*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	}()
	_, code := connect(t, l.Addr().String(), domainReq("slow", 80))
	if code != int(ReplyHostUnreachable) {
		t.Fatalf("reply %d, want host unreachable", code)
	}
}

// TestSilentClientIsCut: a client that connects and never sends is
// disconnected when the handshake time runs out.
func TestSilentClientIsCut(t *testing.T) {
	addr := start(t, meshDial(t), time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read %d, %v: want the server to close", n, err)
	}
	// A client that greets and then stalls mid-request is cut too.
	c2, _ := net.Dial("tcp", addr)
	defer c2.Close()
	c2.Write([]byte{5, 1, 0, 5, 1, 0, atypDomain, 20, 'a'})
	c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.ReadFull(c2, make([]byte, 2))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("stalled client not cut")
	}
}

func TestNoAcceptableMethod(t *testing.T) {
	addr := start(t, meshDial(t), 0)
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	c.Write([]byte{5, 1, 2}) // username/password only
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0xff} {
		t.Fatalf("got %v %v, want 5 ff", m, err)
	}
}

func TestReadRequestAddresses(t *testing.T) {
	r, err := ReadRequest(bytes.NewReader([]byte{5, 1, 0, atypIPv6, 0xfd, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90}))
	if err != nil || r.Addr != netip.MustParseAddr("fd7a::1") || r.Port != 8080 {
		t.Fatalf("%+v %v", r, err)
	}
	r, err = ReadRequest(bytes.NewReader([]byte{5, 1, 0, atypIPv4, 100, 64, 0, 1, 0, 80}))
	if err != nil || r.Addr != netip.MustParseAddr("100.64.0.1") || r.Port != 80 {
		t.Fatalf("%+v %v", r, err)
	}
}

// FuzzReadRequest: the request parser never panics, and what it accepts
// is a CONNECT to a valid address or name.
func FuzzReadRequest(f *testing.F) {
	f.Add(domainReq("web.mesh.internal", 443))
	f.Add([]byte{5, 1, 0, atypIPv4, 100, 64, 0, 1, 0, 80})
	f.Add([]byte{5, 1, 0, atypIPv6, 0xfd, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 1, 0, atypDomain, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ReadRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		if r.Cmd != cmdConnect {
			t.Fatalf("accepted command %d", r.Cmd)
		}
		if r.Name == "" && !r.Addr.IsValid() {
			t.Fatal("accepted a request with no destination")
		}
		if r.Name != "" && !validName([]byte(r.Name)) {
			t.Fatalf("accepted name %q", r.Name)
		}
	})
}

// TestMaxClients: a client beyond the bound is disconnected at once; the
// others are served.
func TestMaxClients(t *testing.T) {
	dial := meshDial(t)
	before := runtime.NumGoroutine()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	s := &Server{Dial: dial, MaxClients: 1}
	go s.Serve(l)
	defer func() {
		l.Close()
		s.Close()
		wait.For(t, 10*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	}()
	first, _ := net.Dial("tcp", l.Addr().String())
	defer first.Close()
	first.Write([]byte{5, 1, 0})
	io.ReadFull(first, make([]byte, 2)) // served: it got its method selection
	second, _ := net.Dial("tcp", l.Addr().String())
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(30 * time.Second))
	second.Write([]byte{5, 1, 0})
	if n, err := second.Read(make([]byte, 2)); err == nil {
		t.Fatalf("second client served (%d bytes) beyond MaxClients 1", n)
	}
}
