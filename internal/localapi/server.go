// Package localapi is the node daemon's local control API: HTTP with JSON
// bodies over a unix socket that only root, or members of one configured
// group, can open. It owns the socket (creation, permissions, the peer
// credential check on every connection), the request and answer types, the
// handler that maps requests onto a Backend (the daemon), and the client the
// CLI verbs use.
//
// Endpoints (all under /localapi/v1):
//
//	GET  /status           Status
//	POST /up      UpRequest → Status
//	POST /down             → {}
//	POST /logout           → {}
//	POST /ping  PingRequest → newline-delimited PingResult, one per probe
//	GET  /netcheck         NetcheckReport
//	     /file/...          file drop, when the Backend is a FileBackend (file.go)
//	     /debug/...         metrics, capture, bundle, when the Backend is a DebugBackend (debug.go)
//	     /routes            route preferences and state, when the Backend is a RoutesBackend (routes.go)
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/httpguard"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/var/run/warren/warrend.sock"

// Backend is what the API drives: the node daemon.
type Backend interface {
	Status() *Status
	Up(ctx context.Context, req UpRequest) (*Status, error)
	Down(ctx context.Context) error
	Logout(ctx context.Context) error
	// Ping sends req.Count probes, calling report after each.
	Ping(ctx context.Context, req PingRequest, report func(PingResult)) error
	// Netcheck measures connectivity to the relays and STUN servers.
	Netcheck(ctx context.Context) (*NetcheckReport, error)
}

// Listen creates the API socket at path: its directory is created (0755) if
// missing, a stale socket left by a dead daemon is replaced, but a socket
// with a live daemon behind it is an error. The socket is mode 0600 owned
// by root, or 0660 with group ownership when group is not empty. It returns
// the listener and the group ID allowed (-1 for root only).
func Listen(path, group string) (net.Listener, int, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, 0, fmt.Errorf("local API: group %q: %w", group, err)
		}
		gid, err = strconv.Atoi(g.Gid)
		if err != nil {
			return nil, 0, fmt.Errorf("local API: group %q has gid %q", group, g.Gid)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, 0, fmt.Errorf("local API: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, 0, fmt.Errorf("local API: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, 0, fmt.Errorf("local API: another daemon is listening on %s", path)
		}
		os.Remove(path)
	}
	// Create the socket with no permissions for anyone but the owner from
	// the first instant, then widen to the group if asked.
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, 0, fmt.Errorf("local API: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, 0, gid); err == nil {
			err = os.Chmod(path, 0o660)
		}
		if err != nil {
			l.Close()
			return nil, 0, fmt.Errorf("local API: %w", err)
		}
	}
	return l, gid, nil
}

// Host is the name the local API answers to (its clients' URLs are
// http://warrend/...; localhost is accepted too). A browser cannot reach a
// unix socket, but every Warren HTTP listener checks Host all the same.
const Host = "warrend"

// Serve serves the API for b on l until l is closed. Each connection's peer
// credentials are checked: root, the daemon's own user, or (when gid >= 0)
// a process with that group among its groups; each request's Host must be
// Host or localhost (package httpguard). Refusals are logged at warning
// level on log (nil discards).
func Serve(l net.Listener, b Backend, gid int, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           httpguard.Wrap(Handler(b), httpguard.Policy{Names: []string{Host}, Logger: log}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
		ConnContext:       connContext,
	}
	return srv.Serve(&credListener{Listener: l, gid: gid, log: log})
}

// credListener drops connections from processes not allowed to use the API.
type credListener struct {
	net.Listener
	gid int
	log *slog.Logger
}

func (l *credListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := l.check(c); err != nil {
			l.log.Warn("local API: refused connection", "err", err)
			c.Close()
			continue
		}
		if uc, ok := c.(*net.UnixConn); ok {
			return newFDRecvConn(uc), nil // descriptors passed by clients (fdpass.go)
		}
		return c, nil
	}
}

func (l *credListener) check(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("not a unix connection")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return cerr
	}
	if cred.Uid == 0 || int(cred.Uid) == os.Geteuid() {
		return nil
	}
	if l.gid >= 0 && (int(cred.Gid) == l.gid || inGroups(cred.Pid, l.gid)) {
		return nil
	}
	return fmt.Errorf("uid %d pid %d is neither root nor in the API group", cred.Uid, cred.Pid)
}

// inGroups reports whether process pid has gid among its supplementary groups.
func inGroups(pid int32, gid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(rest) {
				if f == strconv.Itoa(gid) {
					return true
				}
			}
		}
	}
	return false
}

const maxRequest = 64 << 10

// Handler maps the API onto b.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /localapi/v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("POST /localapi/v1/up", func(w http.ResponseWriter, r *http.Request) {
		var req UpRequest
		if !readJSON(w, r, &req) {
			return
		}
		st, err := b.Up(r.Context(), req)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /localapi/v1/down", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Down(r.Context()); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /localapi/v1/logout", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Logout(r.Context()); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("GET /localapi/v1/netcheck", func(w http.ResponseWriter, r *http.Request) {
		rep, err := b.Netcheck(r.Context())
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /localapi/v1/ping", func(w http.ResponseWriter, r *http.Request) {
		var req PingRequest
		if !readJSON(w, r, &req) {
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		fl, _ := w.(http.Flusher)
		started := false
		err := b.Ping(r.Context(), req, func(pr PingResult) {
			if !started {
				w.WriteHeader(http.StatusOK)
				started = true
			}
			enc.Encode(pr)
			if fl != nil {
				fl.Flush()
			}
		})
		if err != nil {
			if !started {
				writeError(w, http.StatusBadRequest, err)
				return
			}
			enc.Encode(PingResult{Err: err.Error()})
		}
	})
	if fb, ok := b.(FileBackend); ok {
		mux.Handle("/localapi/v1/file/", fb.FileHandler())
	}
	if db, ok := b.(DebugBackend); ok {
		mux.Handle("/localapi/v1/debug/", db.DebugHandler())
	}
	if rb, ok := b.(RoutesBackend); ok {
		routesHandlers(mux, rb) // routes.go
	}
	return mux
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request: %v", err))
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, errorBody{Error: err.Error()})
}
