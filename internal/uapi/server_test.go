package uapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// startServer serves a fresh testDevice on a socket in a temporary
// directory; cleanup stops the server and checks that Serve returned nil.
func startServer(t *testing.T) (*testDevice, string) {
	t.Helper()
	dev := newTestDevice()
	l, err := listenIn(filepath.Join(t.TempDir(), "wireguard"), "wrntest0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(l, dev, logtest.T(t)) }()
	t.Cleanup(func() {
		l.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return dev, l.Addr().String()
}

type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, path string) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one reply: the lines before "errno=N" and N.
func (c *client) reply() (body, errno string) {
	c.t.Helper()
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply after %q: %v", lines, err)
		}
		if line == "\n" {
			break
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "errno=") {
		c.t.Fatalf("reply %q does not end with errno", lines)
	}
	errno = strings.TrimSuffix(strings.TrimPrefix(lines[len(lines)-1], "errno="), "\n")
	return strings.Join(lines[:len(lines)-1], ""), errno
}

func (c *client) expect(req, wantErrno string) string {
	c.t.Helper()
	c.send(req)
	body, errno := c.reply()
	if errno != wantErrno {
		c.t.Errorf("request %.60q: errno=%s, want %s", req, errno, wantErrno)
	}
	return body
}

func TestServeSetThenGet(t *testing.T) {
	dev, path := startServer(t)
	c := dial(t, path)

	if body := c.expect("get=1\n\n", "0"); body != "listen_port=0\n" {
		t.Errorf("initial get: %q", body)
	}
	c.expect("set=1\nprivate_key="+hexKey(0x11)+"\nlisten_port=51820\nfwmark=7\n"+
		"public_key="+hexKey(0x22)+"\nendpoint=192.0.2.1:51820\npersistent_keepalive_interval=25\n"+
		"allowed_ip=10.0.0.0/24\nallowed_ip=fd7a::/64\n\n", "0")
	dev.setStats(pubKey(0x22), peerStats{handshake: time.Unix(1700000000, 5), rx: 11, tx: 22})
	want := "private_key=" + hexKey(0x11) + "\nlisten_port=51820\nfwmark=7\n" +
		"public_key=" + hexKey(0x22) + "\npreshared_key=" + hexKey(0) + "\nprotocol_version=1\n" +
		"endpoint=192.0.2.1:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n" +
		"tx_bytes=22\nrx_bytes=11\npersistent_keepalive_interval=25\n" +
		"allowed_ip=10.0.0.0/24\nallowed_ip=fd7a::/64\n"
	if body := c.expect("get=1\n\n", "0"); body != want {
		t.Errorf("get after set:\n%s\nwant:\n%s", body, want)
	}
	// Removing the key and the peer shows in the next get.
	c.expect("set=1\nprivate_key="+hexKey(0)+"\nfwmark=0\npublic_key="+hexKey(0x22)+"\nremove=true\n\n", "0")
	if body := c.expect("get=1\n\n", "0"); body != "listen_port=51820\n" {
		t.Errorf("get after removals: %q", body)
	}
	if n := len(dev.takeApplied()); n != 2 {
		t.Errorf("%d configs applied, want 2", n)
	}
}

func TestServeBadRequestsKeepConnection(t *testing.T) {
	dev, path := startServer(t)
	c := dial(t, path)
	bad := []struct{ req, errno string }{
		{"hello\n\n", "-71"},
		{"hello=1\nand=more\n\n", "-71"},
		{"get=2\n\n", "-71"},
		{"GET=1\n\n", "-71"},
		{strings.Repeat("g", 3*MaxLineLen) + "\n\n", "-71"},
		{"get=1\nlisten_port=1\n\n", "-22"},
		{"set=1\nbogus\n\n", "-71"},
		{"set=1\nlisten_port=99999\n\n", "-22"},
		{"set=1\npublic_key=" + hexKey(1) + "\nlisten_port=1\n\n", "-71"},
		{"set=1\npublic_key=" + hexKey(1) + "\nprotocol_version=2\n\n", "-22"},
		{"set=1\n" + strings.Repeat("x", 10*MaxLineLen) + "\n\n", "-71"},
		{"\x00\xff\xfe garbage \r\n\n", "-71"},
	}
	for _, b := range bad {
		c.expect(b.req, b.errno)
		// The connection is still in step: a get answers normally.
		if body := c.expect("get=1\n\n", "0"); body != "listen_port=0\n" {
			t.Fatalf("after %.40q: get returned %q", b.req, body)
		}
	}
	if a := dev.takeApplied(); len(a) != 0 {
		t.Errorf("bad requests applied %d configs", len(a))
	}
	// Stray blank lines between requests are ignored.
	c.expect("\n\n\nget=1\n\n", "0")
}

func TestServePipelined(t *testing.T) {
	dev, path := startServer(t)
	c := dial(t, path)
	var req strings.Builder
	for i := range 50 {
		fmt.Fprintf(&req, "set=1\nlisten_port=%d\n\nget=1\n\nnonsense\n\n", 1000+i)
	}
	go c.send(req.String()) // replies are read while the requests are written
	for i := range 50 {
		if _, errno := c.reply(); errno != "0" {
			t.Fatalf("set %d: errno=%s", i, errno)
		}
		body, errno := c.reply()
		if want := fmt.Sprintf("listen_port=%d\n", 1000+i); errno != "0" || body != want {
			t.Fatalf("get %d: %q errno=%s, want %q", i, body, errno, want)
		}
		if _, errno := c.reply(); errno != "-71" {
			t.Fatalf("nonsense %d: errno=%s", i, errno)
		}
	}
	if n := len(dev.takeApplied()); n != 50 {
		t.Errorf("%d configs applied, want 50", n)
	}
}

func TestServeApplyErrors(t *testing.T) {
	dev, path := startServer(t)
	c := dial(t, path)
	for _, tc := range []struct {
		err   error
		errno string
	}{
		{Errorf(EADDRINUSE, "port taken"), "-98"},
		{fmt.Errorf("wrapped: %w", Errorf(EPERM, "no")), "-1"},
		{&Error{Errno: -EIO, Err: errors.New("already negative")}, "-5"},
		{&Error{Errno: 0, Err: errors.New("no errno")}, "-22"},
		{errors.New("plain"), "-22"},
		{nil, "0"},
	} {
		dev.setApplyErr(tc.err)
		c.expect("set=1\nlisten_port=1\n\n", tc.errno)
	}
}

func TestServeTruncatedRequestClosesOnlyThatConnection(t *testing.T) {
	dev, path := startServer(t)
	other := dial(t, path)
	c := dial(t, path)
	c.send("set=1\nlisten_port=5\n")
	c.c.(*net.UnixConn).CloseWrite()
	if _, errno := c.reply(); errno != "-71" {
		t.Errorf("truncated set: errno=%s, want -71", errno)
	}
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed after a truncated request: %v", err)
	}
	if a := dev.takeApplied(); len(a) != 0 {
		t.Errorf("truncated request applied: %+v", a)
	}
	other.expect("get=1\n\n", "0")
	dial(t, path).expect("get=1\n\n", "0")
}

func TestServeConcurrentClients(t *testing.T) {
	dev, path := startServer(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			r := bufio.NewReader(c)
			for j := range 20 {
				fmt.Fprintf(c, "set=1\npublic_key=%s\nallowed_ip=10.%d.%d.0/24\n\nget=1\n\n", hexKey(byte(i+1)), i, j)
				for range 2 {
					var last string
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							t.Error(err)
							return
						}
						if line == "\n" {
							break
						}
						last = line
					}
					if last != "errno=0\n" {
						t.Errorf("client %d: reply ended %q", i, last)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	st := dev.State()
	if len(st.Peers) != 8 {
		t.Fatalf("%d peers, want 8", len(st.Peers))
	}
	for _, p := range st.Peers {
		if len(p.AllowedIPs) != 20 {
			t.Errorf("peer %v: %d allowed IPs, want 20", p.PublicKey, len(p.AllowedIPs))
		}
	}
}

func TestServeLargeConfig(t *testing.T) {
	dev, path := startServer(t)
	c := dial(t, path)
	const n = 100_000
	var req strings.Builder
	req.WriteString("set=1\npublic_key=" + hexKey(1) + "\n")
	for i := range n {
		fmt.Fprintf(&req, "allowed_ip=10.%d.%d.%d/32\n", i>>16, i>>8&0xff, i&0xff)
	}
	req.WriteString("\n")
	go c.send(req.String())
	if _, errno := c.reply(); errno != "0" {
		t.Fatalf("errno=%s", errno)
	}
	body := c.expect("get=1\n\n", "0")
	if got := strings.Count(body, "allowed_ip="); got != n {
		t.Errorf("get lists %d allowed IPs, want %d", got, n)
	}
	if a := dev.takeApplied(); len(a) != 1 || len(a[0].Peers[0].AllowedIPs) != n {
		t.Errorf("applied config does not hold %d allowed IPs", n)
	}
}

func TestServeStopsAndClosesConnections(t *testing.T) {
	dev := newTestDevice()
	l, err := listenIn(filepath.Join(t.TempDir(), "wg"), "wrnstop")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(l, dev, nil) }()
	c := dial(t, l.Addr().String())
	c.expect("get=1\n\n", "0")
	c.send("set=1\nlisten_port=1\n") // left hanging mid-request
	l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("open connection survived Serve's return")
	}
	if len(dev.takeApplied()) != 0 {
		t.Error("half a request was applied")
	}
}

func TestServeState(t *testing.T) {
	// A State the engine fills in directly (not through the model) is
	// rendered through the socket unchanged.
	dev, path := startServer(t)
	var priv noise.PrivateKey
	priv[31] = 0x40
	dev.mu.Lock()
	dev.state = State{PrivateKey: priv, ListenPort: 1, Peers: []PeerState{{PublicKey: pubKey(3), ProtocolVersion: 1}}}
	dev.mu.Unlock()
	var want strings.Builder
	WriteState(&want, dev.State())
	if body := dial(t, path).expect("get=1\n\n", "0"); body != want.String() {
		t.Errorf("got %q, want %q", body, want.String())
	}
}
