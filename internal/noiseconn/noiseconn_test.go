package noiseconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	flynn "github.com/flynn/noise"

	"github.com/warrenmesh/warren/internal/noise"
)

func genKey(t testing.TB) noise.PrivateKey {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type testServer struct {
	*httptest.Server
	key   noise.PrivateKey
	calls atomic.Int32
}

// startServer runs a control server over real TCP whose connections are
// given to handle.
func startServer(t *testing.T, handle func(*Conn)) *testServer {
	t.Helper()
	ts := &testServer{key: genKey(t)}
	srv := &Server{Key: ts.key, Handle: func(c *Conn) {
		ts.calls.Add(1)
		handle(c)
	}}
	mux := http.NewServeMux()
	mux.Handle(Path, srv)
	ts.Server = httptest.NewUnstartedServer(mux)
	ts.Server.Config.ReadHeaderTimeout = 5 * time.Second
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

func echo(c *Conn) { io.Copy(c, c) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The suite must be exactly Noise_IK_25519_ChaChaPoly_BLAKE2s, and the
// framing must carry standard Noise transport messages: checked against the
// Noise test vectors (cacophony format, as shipped with flynn/noise).
func TestNoiseIKVector(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := string(cipherSuite.Name()); got != "25519_ChaChaPoly_BLAKE2s" {
		t.Fatalf("suite %q", got)
	}
	initS, respS := h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"), h("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
	pub := func(priv []byte) []byte {
		var k noise.PrivateKey
		copy(k[:], priv)
		p := noise.NewPrivateKey(k).PublicKey()
		return p[:]
	}
	ihs, err := flynn.NewHandshakeState(flynn.Config{CipherSuite: cipherSuite, Pattern: flynn.HandshakeIK, Initiator: true,
		Random:        bytes.NewReader(h("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f")),
		StaticKeypair: flynn.DHKey{Private: initS, Public: pub(initS)}, PeerStatic: pub(respS)})
	if err != nil {
		t.Fatal(err)
	}
	rhs, err := flynn.NewHandshakeState(flynn.Config{CipherSuite: cipherSuite, Pattern: flynn.HandshakeIK,
		Random:        bytes.NewReader(h("4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60")),
		StaticKeypair: flynn.DHKey{Private: respS, Public: pub(respS)}})
	if err != nil {
		t.Fatal(err)
	}
	m0, _, _, err := ihs.WriteMessage(nil, nil)
	if err != nil || hex.EncodeToString(m0) != "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254c9f0dff42c86abe5677abe74f6c87301577dbc1f3ffb2213827ca694a057fdbbff7f7350265fe61102c24d7d7a7e960ba8b90a679895087c7d28b1d6703f9727" {
		t.Fatalf("msg0 %x %v", m0, err)
	}
	if len(m0) != msg1Len {
		t.Fatalf("msg1Len %d, vector %d", msg1Len, len(m0))
	}
	if _, _, _, err := rhs.ReadMessage(nil, m0); err != nil {
		t.Fatal(err)
	}
	m1, rrx, rtx, err := rhs.WriteMessage(nil, nil)
	if err != nil || hex.EncodeToString(m1) != "64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d4846622bf9c6171ddd4c8f682080b03504eee" {
		t.Fatalf("msg1 %x %v", m1, err)
	}
	if len(m1) != msg2Len {
		t.Fatalf("msg2Len %d, vector %d", msg2Len, len(m1))
	}
	_, itx, irx, err := ihs.ReadMessage(nil, m1)
	if err != nil {
		t.Fatal(err)
	}
	// Transport: frame bodies are the vector's transport messages.
	var w1, w2 bytes.Buffer
	ic := newConn(&captureConn{w: &w1}, nil, noise.PublicKey{}, itx, irx)
	rc := newConn(&captureConn{w: &w2}, nil, noise.PublicKey{}, rtx, rrx)
	ic.Write([]byte("yellowsubmarine"))
	rc.Write([]byte("submarineyellow"))
	for _, tc := range []struct {
		got  []byte
		want string
	}{{w1.Bytes(), "595694f9be48f03790f699455c84578b31d14a7baedfd736d73c53f66a5657"}, {w2.Bytes(), "621ae446b11fda3cf08e56102dac9324dee37a4e536cdc878e8b454d98bcf2"}} {
		if int(binary.BigEndian.Uint16(tc.got)) != len(tc.got)-2 || hex.EncodeToString(tc.got[2:]) != tc.want {
			t.Fatalf("frame %x, want body %s", tc.got, tc.want)
		}
	}
}

// captureConn is a net.Conn that records writes and reads from r.
type captureConn struct {
	net.Conn
	w io.Writer
	r io.Reader
}

func (c *captureConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *captureConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *captureConn) Close() error                { return nil }

func TestHandshakeAndDataBothWays(t *testing.T) {
	peers := make(chan noise.PublicKey, 1)
	ts := startServer(t, func(c *Conn) {
		peers <- c.Peer()
		c.Write([]byte("hello node"))
		echo(c)
	})
	ck := genKey(t)
	c, err := Dial(ctxT(t), ts.URL, ts.key.PublicKey(), ck)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-peers; !got.Equal(ck.PublicKey()) {
		t.Fatalf("server saw peer %v, want %v", got, ck.PublicKey())
	}
	if !c.Peer().Equal(ts.key.PublicKey()) || c.Version() != ProtocolVersion {
		t.Fatal("client peer/version")
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello node" {
		t.Fatalf("%q %v", buf, err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("%q %v", buf[:4], err)
	}
}

func TestTenMegabyteRoundTrip(t *testing.T) {
	ts := startServer(t, echo)
	c, err := Dial(ctxT(t), ts.URL, ts.key.PublicKey(), genKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 10<<20)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		n, err := c.Write(data)
		if err == nil && n != len(data) {
			err = fmt.Errorf("short write %d", n)
		}
		werr <- err
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("data differs")
	}
}

func TestWrongServerKey(t *testing.T) {
	ts := startServer(t, echo)
	_, err := Dial(ctxT(t), ts.URL, genKey(t).PublicKey(), genKey(t))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "server key") {
		t.Fatalf("err = %v", err)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
}

func TestVersionMismatch(t *testing.T) {
	ts := startServer(t, echo)
	_, err := dial(ctxT(t), ts.URL, ts.key.PublicKey(), genKey(t), 2, 2)
	if !errors.Is(err, ErrVersionMismatch) || !strings.Contains(err.Error(), "server speaks version 1") {
		t.Fatalf("err = %v", err)
	}
	// A peer claiming version 1 but binding another version in the
	// prologue cannot complete the handshake.
	_, err = dial(ctxT(t), ts.URL, ts.key.PublicKey(), genKey(t), 1, 2)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v", err)
	}
	// Another Upgrade token of the family is a version mismatch too.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+Path, nil)
	req.Header.Set("Upgrade", "warren-control-v2")
	req.Header.Set("Connection", "Upgrade")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get(VersionHeader) != "1" {
		t.Fatalf("status %v header %q", resp.Status, resp.Header.Get(VersionHeader))
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
}

func TestBadRequestsRefused(t *testing.T) {
	ts := startServer(t, echo)
	for _, tc := range []struct {
		name, method, upgrade, hs string
		want                      int
	}{
		{"get", http.MethodGet, UpgradeToken, "", http.StatusMethodNotAllowed},
		{"no upgrade", http.MethodPost, "", "AAE=", http.StatusBadRequest},
		{"no handshake", http.MethodPost, UpgradeToken, "", http.StatusBadRequest},
		{"not base64", http.MethodPost, UpgradeToken, "!!!", http.StatusBadRequest},
		{"short", http.MethodPost, UpgradeToken, "AAEAAA==", http.StatusBadRequest},
		{"garbage", http.MethodPost, UpgradeToken, base64.StdEncoding.EncodeToString(append([]byte{0, 1}, make([]byte, msg1Len)...)), http.StatusForbidden},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+Path, nil)
		if tc.upgrade != "" {
			req.Header.Set("Upgrade", tc.upgrade)
			req.Header.Set("Connection", "Upgrade")
		}
		req.Header.Set(HandshakeHeader, tc.hs)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %v, want %d", tc.name, resp.Status, tc.want)
		}
	}
	if n := ts.calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
}

// mitm proxies one connection, passing the HTTP exchange through and
// handing each client-to-server frame to mutate, which returns the frames
// to forward.
func mitm(t *testing.T, backend string, mutate func(i int, frame []byte) [][]byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		cc, err := ln.Accept()
		if err != nil {
			return
		}
		defer cc.Close()
		sc, err := net.Dial("tcp", strings.TrimPrefix(backend, "http://"))
		if err != nil {
			return
		}
		defer sc.Close()
		go func() { io.Copy(cc, sc); cc.Close() }()
		br := bufio.NewReader(cc)
		for { // request head
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			sc.Write([]byte(line))
			if line == "\r\n" {
				break
			}
		}
		for i := 0; ; i++ {
			var hdr [2]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return
			}
			f := make([]byte, 2+int(binary.BigEndian.Uint16(hdr[:])))
			copy(f, hdr[:])
			if _, err := io.ReadFull(br, f[2:]); err != nil {
				return
			}
			for _, out := range mutate(i, f) {
				sc.Write(out)
			}
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestTamperReplayReorder(t *testing.T) {
	var held []byte
	for _, tc := range []struct {
		name   string
		mutate func(i int, f []byte) [][]byte
	}{
		{"tamper", func(i int, f []byte) [][]byte {
			if i == 1 {
				f[len(f)-1] ^= 1
			}
			return [][]byte{f}
		}},
		{"tamper length", func(i int, f []byte) [][]byte {
			if i == 1 {
				return [][]byte{append([]byte{0, byte(len(f) - 3)}, f[2:len(f)-1]...)}
			}
			return [][]byte{f}
		}},
		{"replay", func(i int, f []byte) [][]byte {
			if i == 1 {
				return [][]byte{f, f}
			}
			return [][]byte{f}
		}},
		{"reorder", func(i int, f []byte) [][]byte {
			switch i {
			case 1:
				held = f
				return nil
			case 2:
				return [][]byte{f, held}
			}
			return [][]byte{f}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				got []byte
				err error
			}
			res := make(chan result, 1)
			ts := startServer(t, func(c *Conn) {
				got, err := io.ReadAll(c)
				// The failure is sticky.
				if _, err2 := c.Read(make([]byte, 1)); !errors.Is(err2, ErrDecrypt) {
					err = fmt.Errorf("second read: %v", err2)
				}
				res <- result{got, err}
			})
			c, err := Dial(ctxT(t), mitm(t, ts.URL, tc.mutate), ts.key.PublicKey(), genKey(t))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, m := range []string{"one", "two", "three"} {
				c.Write([]byte(m))
			}
			r := <-res
			if !errors.Is(r.err, ErrDecrypt) {
				t.Fatalf("server error %v", r.err)
			}
			if want := map[string]string{"tamper": "one", "tamper length": "one", "replay": "onetwo", "reorder": "one"}[tc.name]; string(r.got) != want {
				t.Fatalf("server got %q before failing, want %q", r.got, want)
			}
			// The server closed the connection: the client sees it end.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, errors.ErrUnsupported) {
				t.Fatalf("client read after failure: %v", err)
			}
		})
	}
}

func TestConcurrentClients(t *testing.T) {
	ts := startServer(t, func(c *Conn) {
		p := c.Peer()
		c.Write(p[:]) // tell the client which key the server authenticated
		echo(c)
	})
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := genKey(t)
			c, err := Dial(ctxT(t), ts.URL, ts.key.PublicKey(), k)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			var seen noise.PublicKey
			if _, err := io.ReadFull(c, seen[:]); err != nil || !seen.Equal(k.PublicKey()) {
				errs <- fmt.Errorf("client %d: server saw %v (%v)", i, seen, err)
				return
			}
			msg := bytes.Repeat([]byte{byte(i)}, 5000+i)
			c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("client %d: echo %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		ts := startServer(t, echo)
		for range 5 {
			c, err := Dial(ctxT(t), ts.URL, ts.key.PublicKey(), genKey(t))
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("x"))
			c.Read(make([]byte, 1))
			c.Close()
		}
		Dial(ctxT(t), ts.URL, genKey(t).PublicKey(), genKey(t)) // refused
		ts.Close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDialErrors(t *testing.T) {
	k := genKey(t)
	for _, u := range []string{"ftp://x", "http://", "::"} {
		if _, err := Dial(ctxT(t), u, k.PublicKey(), k); err == nil {
			t.Errorf("%q: no error", u)
		}
	}
	if _, err := Dial(ctxT(t), "http://127.0.0.1:1", noise.PublicKey{}, k); err == nil {
		t.Error("zero server key accepted")
	}
	// A server that never answers: the context bounds the handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Dial(ctx, "http://"+ln.Addr().String(), k.PublicKey(), k); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("dial not bounded by context")
	}
}
