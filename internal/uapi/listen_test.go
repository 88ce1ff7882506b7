package uapi

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

func TestSocketPath(t *testing.T) {
	if got := SocketPath("wg0"); got != "/var/run/wireguard/wg0.sock" {
		t.Errorf("SocketPath(wg0) = %q", got)
	}
}

func TestListenModes(t *testing.T) {
	old := syscall.Umask(0o077) // Listen must not depend on the umask
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "run", "wireguard")
	l, err := listenIn(dir, "wrnmode0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "wrnmode0.sock")
	if got := l.Addr().String(); got != path {
		t.Errorf("Addr = %q, want %q", got, path)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v, want 0755", di.Mode().Perm())
	}
	si, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if si.Mode().Type() != fs.ModeSocket || si.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want socket 0600", si.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the socket: %v", len(ents), ents)
	}
	go Serve(l, newTestDevice(), nil)
	dial(t, path).expect("get=1\n\n", "0")
	if err := l.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if err := l.Close(); err == nil {
		t.Error("second Close succeeded")
	}
}

func TestListenRejectsBadNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wg")
	for _, name := range []string{"", ".", "..", "a/b", "../x", "/", "sixteen-chars-xx", "a b", "a:1", "a\x00b", "tab\t"} {
		if l, err := listenIn(dir, name); err == nil {
			l.Close()
			t.Errorf("accepted interface name %q", name)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a rejected name still created the directory: %v", err)
	}
	for _, name := range []string{"w", "wg0", "fifteen-chars-x", "wg.1", "wg-_x"} {
		if err := CheckIfname(name); err != nil {
			t.Errorf("rejected good name %q: %v", name, err)
		}
	}
}

func TestListenInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wg")
	l1, err := listenIn(dir, "wrnbusy")
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	go Serve(l1, newTestDevice(), nil)
	_, err = listenIn(dir, "wrnbusy")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "interface already in use") {
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
	// The first server is untouched.
	dial(t, l1.Addr().String()).expect("get=1\n\n", "0")
	l1.Close()
	l3, err := listenIn(dir, "wrnbusy")
	if err != nil {
		t.Fatalf("Listen after the first closed: %v", err)
	}
	l3.Close()
}

func TestListenReplacesStaleSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wg")
	os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, "wrnstale.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close() // the file stays, nobody listens: a crashed server
	l, err := listenIn(dir, "wrnstale")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l.Close()
	go Serve(l, newTestDevice(), nil)
	dial(t, path).expect("get=1\n\n", "0")
}

func TestListenRefusesNonSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wg")
	os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, "wrnfile.sock")
	os.WriteFile(path, []byte("precious"), 0o644)
	if l, err := listenIn(dir, "wrnfile"); err == nil {
		l.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("file changed: %q, %v", b, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("leftovers in the directory: %v", ents)
	}
}

func TestListenCloseKeepsReplacement(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wg")
	l1, err := listenIn(dir, "wrnrepl")
	if err != nil {
		t.Fatal(err)
	}
	path := l1.Addr().String()
	os.Remove(path) // e.g. removed by hand, and a new server started
	l2, err := listenIn(dir, "wrnrepl")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	l1.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("closing the old listener removed the new socket: %v", err)
	}
}

// TestPeerCredHelper is the client half of TestServeRejectsOtherUsers,
// run in a child process as another user.
func TestPeerCredHelper(t *testing.T) {
	path := os.Getenv("WARREN_UAPI_HELPER_DIAL")
	if path == "" {
		t.Skip("helper process only")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "get=1\n\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	os.Stdout.WriteString("REPLY:" + strings.TrimSpace(line) + ":" + errString(err) + "\n")
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func TestServeRejectsOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	// A world-reachable socket (as if its mode had been widened by hand),
	// and a copy of the test binary that user nobody may run.
	dir, err := os.MkdirTemp("", "warren-uapi-cred-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "uapi.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "open.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(path, 0o666)
	dev := newTestDevice()
	go Serve(l, dev, logtest.T(t))

	run := func(uid uint32) string {
		cmd := exec.Command(exe, "-test.run=^TestPeerCredHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "WARREN_UAPI_HELPER_DIAL="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "REPLY:") {
				return line
			}
		}
		t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
		return ""
	}
	if got := run(0); got != "REPLY:listen_port=0:nil" {
		t.Errorf("root client: %q", got)
	}
	// Closed unanswered: EOF, or a reset because the request went unread.
	if got := run(65534); got != "REPLY::EOF" && !(strings.HasPrefix(got, "REPLY::") && strings.HasSuffix(got, "connection reset by peer")) {
		t.Errorf("uid 65534 client: %q, want the connection closed unanswered", got)
	}
}
