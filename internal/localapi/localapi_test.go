package localapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// backend is a minimal Backend for exercising the HTTP layer. Requests
// may come on different connections (served by different goroutines), so
// its state is locked.
type backend struct {
	mu sync.Mutex
	st Status
}

func (b *backend) Status() *Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.st
	return &st
}
func (b *backend) Up(_ context.Context, req UpRequest) (*Status, error) {
	if req.AuthKey == "bad" {
		return nil, errors.New("registration refused: unknown or invalid auth key")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.BackendState = StateRunning
	st := b.st
	return &st, nil
}
func (b *backend) Down(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.BackendState = StateStopped
	return nil
}
func (b *backend) Logout(context.Context) error { return errors.New("not registered") }
func (b *backend) Netcheck(context.Context) (*NetcheckReport, error) {
	return &NetcheckReport{UDP: true, MappingVaries: "no"}, nil
}
func (b *backend) Ping(_ context.Context, req PingRequest, report func(PingResult)) error {
	if req.Peer == "nobody" {
		return errors.New(`no peer "nobody"`)
	}
	for i := 1; i <= req.Count; i++ {
		report(PingResult{Seq: i, Peer: req.Peer, RTT: time.Duration(i) * time.Millisecond})
	}
	return nil
}

func serve(t *testing.T) (string, *backend) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	l, gid, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{st: Status{BackendState: StateNeedsLogin, Peers: []PeerStatus{}}}
	go Serve(l, b, gid, logtest.T(t))
	t.Cleanup(func() { l.Close() })
	return path, b
}

func TestListenPermissions(t *testing.T) {
	path, _ := serve(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want 0600 socket", fi.Mode())
	}
	// A second daemon on the same path is refused.
	if _, _, err := Listen(path, ""); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Fatalf("second listener: %v", err)
	}
	// A stale socket (nobody listening) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, _, err := Listen(stale, "")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	// A regular file is never removed.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, _, err := Listen(file, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
	if _, _, err := Listen(filepath.Join(t.TempDir(), "g.sock"), "no-such-group-xyz"); err == nil {
		t.Fatal("unknown group accepted")
	}
}

func TestClientRoundTrips(t *testing.T) {
	path, _ := serve(t)
	c := NewClient(path)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.BackendState != StateNeedsLogin {
		t.Fatalf("status: %+v %v", st, err)
	}
	if _, err := c.Up(ctx, UpRequest{AuthKey: "bad"}); err == nil || err.Error() != "registration refused: unknown or invalid auth key" {
		t.Fatalf("up error not passed through as one line: %v", err)
	}
	if st, err := c.Up(ctx, UpRequest{AuthKey: "good"}); err != nil || st.BackendState != StateRunning {
		t.Fatalf("up: %+v %v", st, err)
	}
	if err := c.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout(ctx); err == nil || err.Error() != "not registered" {
		t.Fatalf("logout: %v", err)
	}
	var got []PingResult
	if err := c.Ping(ctx, PingRequest{Peer: "b", Count: 3}, func(r PingResult) { got = append(got, r) }); err != nil || len(got) != 3 || got[2].Seq != 3 {
		t.Fatalf("ping: %+v %v", got, err)
	}
	if err := c.Ping(ctx, PingRequest{Peer: "nobody", Count: 1}, func(PingResult) {}); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Fatalf("ping error: %v", err)
	}
	// Unknown fields and bad JSON are refused with a clear error.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", path)
	}}}
	resp, err := hc.Post("http://warrend/localapi/v1/up", "application/json", strings.NewReader(`{"authKey":"x","bogus":1}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "bogus") {
		t.Fatalf("unknown field: %d %s", resp.StatusCode, body)
	}
	// No daemon: a message that says what to do.
	_, err = NewClient(filepath.Join(t.TempDir(), "none.sock")).Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "is `warren daemon` running?") {
		t.Fatalf("no daemon: %v", err)
	}
}

// TestPeerCredentials: even with the socket opened up to everyone, a
// process that is neither root nor in the API group is dropped.
func TestPeerCredentials(t *testing.T) {
	if os.Getenv("LOCALAPI_DIAL") != "" {
		_, err := NewClient(os.Getenv("LOCALAPI_DIAL")).Status(context.Background())
		fmt.Println("RESULT", err == nil)
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	path, _ := serve(t)
	os.Chmod(filepath.Dir(filepath.Dir(path)), 0o755)
	os.Chmod(filepath.Dir(path), 0o755)
	os.Chmod(path, 0o666)
	// The test binary must be executable by the unprivileged user.
	dir, err := os.MkdirTemp("", "localapi-cred-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(dir, "t")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(uid uint32) string {
		cmd := exec.Command(bin, "-test.run=^TestPeerCredentials$")
		cmd.Env = append(os.Environ(), "LOCALAPI_DIAL="+path)
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	if out := run(65534); !strings.Contains(out, "RESULT false") {
		t.Fatalf("uid 65534 was served:\n%s", out)
	}
	if out := run(0); !strings.Contains(out, "RESULT true") {
		t.Fatalf("root was refused:\n%s", out)
	}
}
