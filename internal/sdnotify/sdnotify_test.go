package sdnotify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Listen binds a unixgram socket as $NOTIFY_SOCKET for the test and
// returns a function reading the next datagram.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4096)
		n, err := c.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[:n])
	}
}

func TestNotifyPathAndAbstract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	next := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	if sent, err := FromEnv().Notify(Ready); !sent || err != nil {
		t.Fatalf("Notify: %v %v", sent, err)
	}
	if got := next(); got != Ready {
		t.Fatalf("got %q", got)
	}

	abstract := "warren-sdnotify-test-" + strconv.Itoa(int(time.Now().UnixNano()))
	nextA := listen(t, "\x00"+abstract)
	t.Setenv("NOTIFY_SOCKET", "@"+abstract)
	if _, err := FromEnv().Notify(Stopping); err != nil {
		t.Fatal(err)
	}
	if got := nextA(); got != Stopping {
		t.Fatalf("abstract: got %q", got)
	}
}

func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := FromEnv().Notify(Ready); sent || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v %v", sent, err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if _, err := FromEnv().Notify(Ready); err == nil {
		t.Fatal("no error for a socket nobody listens on")
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"bogus", "", 0},
		{"-5", "", 0},
		{"2000000", "", 2 * time.Second},
		{"2000000", "1", 0}, // another process's watchdog (we are not pid 1 in tests)
		{"2000000", "self", 2 * time.Second},
	} {
		pid := tc.pid
		if pid == "self" {
			pid = strconv.Itoa(os.Getpid())
		}
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", pid)
		if got := FromEnv().WatchdogInterval(); got != tc.want {
			t.Errorf("USEC=%q PID=%q: %v, want %v", tc.usec, pid, got, tc.want)
		}
	}
}

// The watchdog pings once per passing check and never for a failing one.
func TestRunWatchdog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("WATCHDOG_USEC", "2000") // a check every millisecond
	results := make(chan error)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		FromEnv().RunWatchdog(ctx, func(cctx context.Context) error {
			select {
			case err := <-results:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}, t.Logf)
	}()
	sick := errors.New("sick")
	passing := 0
	for _, r := range []error{nil, sick, sick, nil, sick, nil} {
		results <- r // returns once the watchdog has taken the result
		if r == nil {
			passing++
		}
	}
	results <- sick // taken only after the last result's keep-alive was sent
	cancel()
	<-done
	// Every datagram is queued by now: exactly one per passing check.
	b := make([]byte, 64)
	got := 0
	for {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)) // (a past deadline reads nothing at all)
		n, err := c.Read(b)
		if err != nil {
			break
		}
		if string(b[:n]) != Watchdog {
			t.Fatalf("got %q", b[:n])
		}
		got++
	}
	if got != passing {
		t.Fatalf("%d keep-alives for %d passing checks", got, passing)
	}
}
