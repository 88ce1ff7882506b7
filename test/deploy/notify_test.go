package deploy

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"warren/internal/nettest"
	"warren/internal/sdnotify"
)

// TestDaemonNotifiesSystemd runs `warren daemon` (the real binary) in a
// network namespace as systemd would with Type=notify and WatchdogSec: it
// sends READY=1 once its local API answers, WATCHDOG=1 while the API
// keeps answering, and STOPPING=1 when SIGTERM starts its shutdown. (The
// server's and relay's are tested in process in internal/cli.)
func TestDaemonNotifiesSystemd(t *testing.T) {
	ns := nettest.NewNS(t, "wdn")
	dir := t.TempDir()
	notify := filepath.Join(dir, "notify") // a path: abstract sockets are per namespace
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next := func() string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b := make([]byte, 256)
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("no sd_notify message: %v", err)
		}
		return string(b[:n])
	}
	t.Setenv("NOTIFY_SOCKET", notify)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	cmd := ns.Start(t, warrenBin, "daemon", "--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "sock"),
		"--tun", "warren0", "--port", "0", "--resolv-conf", filepath.Join(dir, "resolv.conf"))
	if got := next(); got != sdnotify.Ready {
		t.Fatalf("first message %q, want %s", got, sdnotify.Ready)
	}
	for range 2 {
		if got := next(); got != sdnotify.Watchdog {
			t.Fatalf("got %q, want %s", got, sdnotify.Watchdog)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		got := next()
		if got == sdnotify.Stopping {
			break
		}
		if got != sdnotify.Watchdog {
			t.Fatalf("got %q while stopping", got)
		}
	}
}
