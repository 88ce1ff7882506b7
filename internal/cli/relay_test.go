package cli

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/stun"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func TestRelayUsageErrors(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	t.Setenv(envRelayKey, "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"relay"}, "warren relay: --server is required"},
		{[]string{"relay", "--server", "http://x"}, "warren relay: --relay-key is required"},
		{[]string{"relay", "--server", "http://x", "--relay-key", "wapi_x"}, "does not look like a relay key"},
		{[]string{"relay", "--server", "http://x", "--relay-key", "wrly_x", "--api-key", "wapi_x"}, "give one"},
		{[]string{"relay", "--server", "ftp://x", "--api-key", "wapi_x"}, `"ftp://x" is not an http(s)://HOST[:PORT] URL`},
		{[]string{"relay", "--server", "http://x", "--api-key", "nope"}, "--api-key: does not look like an API key (wapi_... or wrly_...)"},
		{[]string{"relay", "--server", "http://x", "--api-key", "wapi_x", "--tls-cert", "c"}, "tls_cert and tls_key go together"},
		{[]string{"relay", "--server", "http://x", "--api-key", "wapi_x", "--rate", "-1"}, `"-1" is not a byte count`},
		{[]string{"relay", "--server", "http://x", "--api-key", "wapi_x", "--rate", "5X"}, `"5X" is not a byte count`},
		{[]string{"relay", "--server", "http://x", "--api-key", "wapi_x", "--burst", "1M"}, "burst needs rate"},
		{[]string{"relay", "--server", "http://x", "--api-key", "wapi_x", "--queue", "0"}, "queue must be at least 1 packet"},
		{[]string{"relay", "--server", "http://x", "--api-key", "wapi_x"}, "pass --insecure"},
		{[]string{"relay", "extra"}, `unexpected argument "extra"`},
		{[]string{"relay", "--bogus"}, "warren relay: unknown flag: --bogus"},
	} {
		code, _, errb := cmd(t, tc.args...)
		if code != 2 || !strings.Contains(errb, tc.want) || strings.Count(errb, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errb, tc.want)
		}
	}
	if code, out, _ := cmd(t, "relay", "--help"); code != 0 || !strings.Contains(out, "-stun-listen") {
		t.Errorf("--help: %d %q", code, out)
	}
	dir := t.TempDir()
	if code, _, errb := cmd(t, "relay", "key", "--data-dir", dir); code != 1 || !strings.Contains(errb, "no relay key at") {
		t.Errorf("relay key before first start: %d %q", code, errb)
	}
}

// startRelayCmd runs `warren relay` in process and returns its URL and key.
func startRelayCmd(t *testing.T, c *relayConfig) (url string, pub noise.PublicKey, stunAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &lockedBuffer{}
	done := make(chan int, 1)
	go func() { done <- serveRelay(ctx, c, stderr) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("relay exited %d: %s", code, stderr.String())
			}
		})
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rec := logRecord(stderr.String(), "listening"); rec != nil {
			var err error
			if pub, err = noise.ParsePublicKey(rec["public_key"]); err != nil {
				t.Fatal(err)
			}
			url = rec["url"]
		}
		if rec := logRecord(stderr.String(), "STUN"); rec != nil {
			stunAddr = rec["udp"]
		}
		if url != "" && (stunAddr != "" || config.Get(c.cfg, config.RelaySTUNListen) == "") {
			return url, pub, stunAddr
		}
		select {
		case code := <-done:
			t.Fatalf("relay exited %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not start: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stunCheck(t *testing.T, addr string) {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := stun.Request(ctx, pc, ua)
	if err != nil || got != pc.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("STUN: %v %v", got, err)
	}
}

func TestRelayEndToEnd(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir, "--relay", "--stun-listen", "127.0.0.1:0")
	apiKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir))
	// startServer returns on the "listening" line; the relay and STUN
	// lines are logged after it.
	var stunRec map[string]string
	wait.Until(t, "the server logs its STUN address", func() bool {
		stunRec = logRecord(ts.stderr.String(), "STUN")
		return stunRec != nil
	})
	if rec := logRecord(ts.stderr.String(), "relay"); rec == nil || rec["url"] != ts.url+relay.Path {
		t.Fatalf("server output: %s", ts.stderr.String())
	}
	stunCheck(t, stunRec["udp"])

	// A node joins through the control protocol.
	a := func(args ...string) string {
		t.Helper()
		return ok(t, append([]string{"admin", "--server", ts.url, "--api-key", apiKey}, args...)...)
	}
	a("users", "create", "alice")
	authKey := strings.TrimSpace(a("authkeys", "create", "--user", "alice", "--reusable"))
	spub, err := noise.ParsePublicKey(ts.pub)
	if err != nil {
		t.Fatal(err)
	}
	join := func() noise.PrivateKey {
		nk, _ := noise.GeneratePrivateKey()
		cl, err := client.New(client.Config{ServerURL: ts.url, ServerKey: pubkey.Server{PublicKey: spub}, NodeKey: nk, Logger: logtest.T(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cl.Register(ctx, authKey, "node", nil); err != nil {
			t.Fatal(err)
		}
		return nk
	}
	n1, n2 := join(), join()
	stranger, _ := noise.GeneratePrivateKey()
	dial := func(url string, rk noise.PublicKey, k noise.PrivateKey) (*relay.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return relay.Dial(ctx, url, pubkey.Relay{PublicKey: rk}, k, relay.DialOptions{})
	}

	// Embedded: the server's own URL and key.
	c1, err := dial(ts.url, spub, n1)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if _, err := dial(ts.url, spub, stranger); !errors.Is(err, relay.ErrNotVouched) {
		t.Fatalf("stranger on the embedded relay: %v", err)
	}

	// Standalone: its own key, vouching through the admin API with a
	// relay key, which can do nothing else there.
	relayKey := strings.TrimSpace(a("apikeys", "create", "--scope", "relay"))
	if !strings.HasPrefix(relayKey, "wrly_") {
		t.Fatalf("relay key %q", relayKey)
	}
	// (the admin API answers 403; the admin CLI does not even send it)
	if code, _, errb := cmd(t, "admin", "--server", ts.url, "--api-key", relayKey, "users", "create", "mallory"); code != 2 || !strings.Contains(errb, "does not look like an admin API key") {
		t.Fatalf("relay key creating a user: exit %d, %q", code, errb)
	}
	if list := a("apikeys", "list"); !strings.Contains(list, "relay") || !strings.Contains(list, "SCOPE") {
		t.Fatalf("apikeys list:\n%s", list)
	}
	rdir := filepath.Join(t.TempDir(), "relay")
	fs, rc := relayFlags()
	if err := fs.Parse([]string{"--listen", "127.0.0.1:0", "--stun-listen", "127.0.0.1:0", "--data-dir", rdir,
		"--server", ts.url, "--relay-key", relayKey, "--poll", "200ms"}); err != nil {
		t.Fatal(err)
	}
	if err := rc.check(); err != nil {
		t.Fatal(err)
	}
	rurl, rpub, rstun := startRelayCmd(t, rc)
	if fi, err := os.Stat(filepath.Join(rdir, relayKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("relay key file: %v %v", fi, err)
	}
	if got := strings.TrimSpace(ok(t, "relay", "key", "--data-dir", rdir)); got != rpub.String() || rpub == spub {
		t.Fatalf("relay key %q, startup line says %s", got, rpub)
	}
	stunCheck(t, rstun)
	r1, err := dial(rurl, rpub, n1)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := dial(rurl, rpub, n2)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if _, err := dial(rurl, rpub, stranger); !errors.Is(err, relay.ErrNotVouched) {
		t.Fatalf("stranger on the standalone relay: %v", err)
	}
	if err := r1.Send(pubkey.Node{PublicKey: n2.PublicKey()}, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	r2.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := r2.Recv()
	if err != nil || m.Type != relay.MsgPacket || m.Peer.PublicKey != n1.PublicKey() || string(m.Data) != "hello" {
		t.Fatalf("relayed: %+v %v", m, err)
	}
	// A node that joins later is let in after a poll.
	n3 := join()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dial(rurl, rpub, n3)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("late joiner: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A wrong API key fails at start.
	fs, bad := relayFlags()
	fs.Parse([]string{"--listen", "127.0.0.1:0", "--stun-listen", "", "--data-dir", rdir, "--server", ts.url, "--api-key", "wapi_wrong"})
	if err := bad.check(); err != nil {
		t.Fatal(err)
	}
	var errb lockedBuffer
	if code := serveRelay(context.Background(), bad, &errb); code != 1 || !strings.Contains(errb.String(), "401") {
		t.Fatalf("wrong API key: %d %q", code, errb.String())
	}
	// An admin key still works, with a warning that it is more than the
	// relay needs.
	if !strings.Contains(errb.String(), `level=WARN msg="--api-key is a full admin key`) {
		t.Fatalf("no over-privilege warning: %q", errb.String())
	}
}

// startRelayWithServer starts a server and a standalone relay vouched by
// it with a relay key, the relay on loopback with extra flags, and returns
// the relay's URL.
func startRelayWithServer(t *testing.T, extra ...string) string {
	t.Helper()
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := filepath.Join(t.TempDir(), "data")
	ts := startServer(t, dir)
	relayKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--scope", "relay", "--data-dir", dir))
	fs, rc := relayFlags()
	args := []string{"--listen", "127.0.0.1:0", "--stun-listen", "", "--data-dir", filepath.Join(t.TempDir(), "relay"),
		"--server", ts.url, "--relay-key", relayKey}
	if err := fs.Parse(append(args, extra...)); err != nil {
		t.Fatal(err)
	}
	if err := rc.check(); err != nil {
		t.Fatal(err)
	}
	url, _, _ := startRelayCmd(t, rc)
	return url
}
