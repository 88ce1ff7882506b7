package deploy

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/sdnotify"
	"github.com/warrenmesh/warren/internal/testutil/unitcaps"
)

// TestDaemonNotifiesSystemd runs `warren daemon` (the real binary) in a
// network namespace as warren-daemon.service does: root with only the
// unit's capability bounding set and no new privileges, with Type=notify
// and WatchdogSec. It starts with those capabilities, sends READY=1 once
// its local API answers, WATCHDOG=1 while the API keeps answering, and
// STOPPING=1 when SIGTERM starts its shutdown. (The server's and relay's
// notifications are tested in process in internal/cli.)
func TestDaemonNotifiesSystemd(t *testing.T) {
	caps := unitcaps.Setpriv(t, "warren-daemon.service")
	if !strings.Contains(caps, "+net_admin") {
		t.Fatalf("the daemon's unit lacks CAP_NET_ADMIN: %q", caps)
	}
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
	daemon := func(dir, bounding string) []string {
		return []string{"--nnp", "--bounding-set=-all," + bounding, "--", warrenBin, "daemon", "--state-dir", filepath.Join(dir, "state"),
			"--socket", filepath.Join(dir, "sock"), "--tun", "warren0", "--port", "0", "--resolv-conf", filepath.Join(dir, "resolv.conf")}
	}
	// Without CAP_NET_ADMIN it cannot start: the bounding set is real.
	if out, err := ns.Output(append([]string{"setpriv"}, daemon(t.TempDir(), "+net_raw")...)...); err == nil || !strings.Contains(out, "warren0") {
		t.Fatalf("daemon without CAP_NET_ADMIN: %v\n%s", err, out)
	}
	cmd := ns.Start(t, "setpriv", daemon(dir, caps)...)
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
