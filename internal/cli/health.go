package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/sdnotify"
	"github.com/warrenmesh/warren/internal/store"
)

// Health endpoints and service-manager notifications of the long-running
// commands. /healthz answers 200 "ok" while the process serves HTTP at
// all; /readyz answers 200 "ok" when what the service depends on works
// (the server: its store; the relay: the server vouching for its nodes),
// else 503 and one line naming the reason in fixed words ("store
// unreachable"; the detail goes to the log). Both are on the public
// listener, behind its Host check (probes by IP address pass), and say
// nothing a stranger may not know. Under systemd (Type=notify) the
// service sends READY=1 once it serves, WATCHDOG=1 while it answers its
// own /healthz (or, the daemon, its local API), and STOPPING=1 on shutdown.

const (
	healthPath = "/healthz"
	readyPath  = "/readyz"
	// readyTimeout bounds a readiness check (a store ping).
	readyTimeout = 2 * time.Second
)

// notReady is a readiness failure: reason is what /readyz tells anyone
// who asks (fixed words: the listener is public), err the detail only the
// log gets.
type notReady struct {
	reason string
	err    error
}

func (e notReady) Error() string { return e.reason + ": " + e.err.Error() }
func (e notReady) Unwrap() error { return e.err }

// mountHealth serves /healthz and /readyz on mux; ready reports why the
// service is not ready (nil: it is), and each change of that is logged.
func mountHealth(mux *http.ServeMux, ready func(context.Context) error, logger *slog.Logger) {
	mux.HandleFunc("GET "+healthPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "ok\n")
	})
	var mu sync.Mutex
	last := "" // the last detail logged; "" while ready
	mux.HandleFunc("GET "+readyPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		err := ready(ctx)
		detail := ""
		if err != nil {
			detail = strings.ReplaceAll(err.Error(), "\n", "; ")
		}
		mu.Lock()
		if detail != last {
			if err != nil {
				logger.Warn("not ready", "err", detail)
			} else {
				logger.Info("ready again")
			}
			last = detail
		}
		mu.Unlock()
		if err != nil {
			reason := "not ready"
			var nr notReady
			if errors.As(err, &nr) {
				reason = nr.reason
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		io.WriteString(w, "ok\n")
	})
}

// storeReady pings the server's store.
func storeReady(ctx context.Context, st *store.Store) error {
	if err := st.Ping(ctx); err != nil {
		return notReady{"store unreachable", err}
	}
	return nil
}

// selfProbe returns a check that GETs /healthz from the listener at addr
// over loopback (its own address when it is bound to one): the watchdog's
// proof that the process still accepts and answers. With TLS the
// certificate is not verified: the probe talks to its own socket, sends
// nothing secret and reads only the status.
func selfProbe(addr net.Addr, useTLS bool) func(context.Context) error {
	var ap netip.AddrPort
	if t, ok := addr.(*net.TCPAddr); ok {
		ap = t.AddrPort()
	}
	host := "127.0.0.1" // an unspecified address ([::] is dual-stack) answers there too
	if a := ap.Addr().Unmap(); a.IsValid() && !a.IsUnspecified() {
		host = a.String()
	}
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	url := scheme + "://" + net.JoinHostPort(host, fmt.Sprint(ap.Port())) + healthPath
	hc := &http.Client{Transport: &http.Transport{
		Proxy:             nil, // never through a proxy from the environment
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // see above: our own socket
	}, CheckRedirect: noRedirects}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// notifyServing tells the service manager that the service serves and
// feeds its watchdog while alive passes; when ctx ends (the shutdown
// begins) or the function returned is called, it sends STOPPING=1.
// Outside systemd it does nothing.
func notifyServing(ctx context.Context, logger *slog.Logger, alive func(context.Context) error) (stop func()) {
	n := sdnotify.FromEnv()
	if _, err := n.Notify(sdnotify.Ready); err != nil {
		logger.Warn("sd_notify READY=1 failed", "err", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.RunWatchdog(wctx, alive, func(format string, args ...any) { logger.Warn(fmt.Sprintf(format, args...)) })
		<-wctx.Done()
		if _, err := n.Notify(sdnotify.Stopping); err != nil {
			logger.Warn("sd_notify STOPPING=1 failed", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
