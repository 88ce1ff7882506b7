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

// Notify sends state (newline-separated KEY=VALUE lines) to the service
// manager. It reports false, nil when $NOTIFY_SOCKET is not set.
func Notify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
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

// WatchdogInterval returns how often WATCHDOG=1 must be sent ($WATCHDOG_USEC),
// or 0 when the watchdog is off or meant for another process ($WATCHDOG_PID).
func WatchdogInterval() time.Duration {
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// RunWatchdog sends WATCHDOG=1 every half watchdog interval while healthy
// returns nil, until ctx ends; a failing check is passed to logf and its
// ping skipped, so that systemd restarts a service that stays unhealthy.
// It returns at once when the watchdog is off.
func RunWatchdog(ctx context.Context, healthy func(context.Context) error, logf func(string, ...any)) {
	iv := WatchdogInterval() / 2
	if iv <= 0 {
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
		} else if _, err := Notify(Watchdog); err != nil {
			logf("watchdog: %v", err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}
