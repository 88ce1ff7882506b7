// Package sdnotify owns Warren's side of systemd's service notification
// protocol (sd_notify(3)): one datagram per state change, sent to the
// unix socket named by $NOTIFY_SOCKET ("@name" is the abstract namespace).
// READY=1 says the service serves, WATCHDOG=1 that it is still healthy
// (every half of $WATCHDOG_USEC), STOPPING=1 that it is shutting down.
// Outside systemd (no $NOTIFY_SOCKET) every call does nothing. It is a few
// lines of the standard library, so no dependency is taken for it.
package sdnotify

import (
	"context"
	"net"
	"os"
	"strconv"
	"time"
)

// The states Warren sends.
const (
	Ready    = "READY=1"
	Watchdog = "WATCHDOG=1"
	Stopping = "STOPPING=1"
)

// Notifier is the service manager's socket and watchdog interval, read
// from the environment once, when the service starts.
type Notifier struct {
	socket   string        // "" outside systemd
	watchdog time.Duration // 0: off
}

// FromEnv reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (a
// watchdog meant for another process is off).
func FromEnv() Notifier {
	n := Notifier{socket: os.Getenv("NOTIFY_SOCKET")}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return n
	}
	if us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		n.watchdog = time.Duration(us) * time.Microsecond
	}
	return n
}

// Notify sends state (newline-separated KEY=VALUE lines) to the service
// manager. It reports false, nil when there is none.
func (n Notifier) Notify(state string) (bool, error) {
	name := n.socket
	if name == "" {
		return false, nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// WatchdogInterval is how often WATCHDOG=1 must be sent, 0 when the
// watchdog is off.
func (n Notifier) WatchdogInterval() time.Duration { return n.watchdog }

// RunWatchdog sends WATCHDOG=1 every half watchdog interval while healthy
// returns nil, until ctx ends; a failing check is passed to logf and its
// keep-alive skipped, so that systemd restarts a service that stays
// unhealthy. It returns at once when the watchdog is off.
func (n Notifier) RunWatchdog(ctx context.Context, healthy func(context.Context) error, logf func(string, ...any)) {
	iv := n.watchdog / 2
	if iv <= 0 || n.socket == "" {
		return
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, iv)
		err := healthy(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			logf("watchdog: not healthy, no keep-alive sent: %v", err)
		} else if _, err := n.Notify(Watchdog); err != nil {
			logf("watchdog: %v", err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}
