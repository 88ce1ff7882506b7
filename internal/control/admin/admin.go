// Package admin owns the coordination server's administration API: an HTTP
// JSON interface under /api/v1/ for users, pre-auth keys, nodes and admin API
// keys, authenticated by a bearer admin API key (wapi_...) checked against the
// store. A relay key (wrly_..., scope "relay") is refused everywhere but
// GET /api/v1/relay/nodes, the node keys a standalone relay vouches with. It validates every request (bounded bodies, unknown fields refused,
// DNS-label node names), turns store errors into one-line JSON errors with
// the matching status code, returns key secrets only when a key is created,
// and calls the server's notify hook after every change to users or nodes so
// that connected nodes receive the resulting map deltas at once.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/store"
)

// MaxBody bounds a request body.
const MaxBody = 64 << 10

// Prefix is where the API is mounted.
const Prefix = "/api/v1/"

type api struct {
	st     *store.Store
	notify func()
	mux    *http.ServeMux
	domain string // the MagicDNS domain (see WithDomain)
	log    *slog.Logger
}

// Option configures the admin API.
type Option func(*api)

// defaultDomain is the MagicDNS domain when WithDomain is not given (the
// coordination server's default, server.DefaultDomain).
const defaultDomain = "warren.internal"

// WithDomain tells the API the deployment's MagicDNS domain: custom DNS
// records must lie in it or in a custom zone.
func WithDomain(d string) Option {
	return func(a *api) {
		if d != "" {
			a.domain = dnsname.Normalize(d)
		}
	}
}

// WithLogger gives the API a logger for internal errors (a failing store),
// logged at error level with the request; without it (or with nil) they
// are discarded. Refused requests are the client's business: the reply
// says why.
func WithLogger(l *slog.Logger) Option {
	return func(a *api) {
		if l != nil {
			a.log = l
		}
	}
}

// route is one endpoint: a ServeMux pattern and its handler, which returns
// the status and the JSON body, or an error.
type route struct {
	pattern string
	h       func(w http.ResponseWriter, r *http.Request) (int, any, error)
}

// Handler is the admin API: an http.Handler for requests carrying an API
// key, and a Caller for the server's own front ends.
type Handler interface {
	http.Handler
	Caller
}

// New returns the admin API handler over st. It serves paths under Prefix
// (mount it there unchanged). notify, if not nil, is called after every
// mutation that affects users or nodes.
func New(st *store.Store, notify func(), opts ...Option) Handler {
	if notify == nil {
		notify = func() {}
	}
	a := &api{st: st, notify: notify, mux: http.NewServeMux(), domain: defaultDomain, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(a)
	}
	routes := []route{
		{"GET /api/v1/users", a.listUsers},
		{"POST /api/v1/users", a.createUser},
		{"GET /api/v1/users/{user}", a.getUser},
		{"PATCH /api/v1/users/{user}", a.renameUser},
		{"DELETE /api/v1/users/{user}", a.deleteUser},

		{"GET /api/v1/authkeys", a.listAuthKeys},
		{"POST /api/v1/authkeys", a.createAuthKey},
		{"POST /api/v1/authkeys/{id}/expire", a.expireAuthKey},
		{"DELETE /api/v1/authkeys/{id}", a.deleteAuthKey},

		{"GET /api/v1/nodes", a.listNodes},
		{"GET /api/v1/nodes/{node}", a.getNode},
		{"PATCH /api/v1/nodes/{node}", a.renameNode},
		{"POST /api/v1/nodes/{node}/expire", a.expireNode},
		{"POST /api/v1/nodes/{node}/approve", a.approveNode},
		{"PUT /api/v1/nodes/{node}/tags", a.tagNode},
		{"DELETE /api/v1/nodes/{node}", a.deleteNode},

		{"GET /api/v1/apikeys", a.listAPIKeys},
		{"POST /api/v1/apikeys", a.createAPIKey},
		{"POST /api/v1/apikeys/{id}/expire", a.expireAPIKey},
		{"DELETE /api/v1/apikeys/{id}", a.deleteAPIKey},
	}
	routes = append(routes, dnsRoutes(a)...)
	routes = append(routes, policyRoutes(a)...)
	routes = append(routes, routesRoutes(a)...)
	routes = append(routes, wireGuardRoutes(a)...)
	routes = append(routes, peerRelayRoutes(a)...)
	routes = append(routes, route{RelayNodesPattern, a.relayNodes}, route{"GET " + AuditPath, a.listAudit})
	for _, rt := range routes {
		h, pattern := rt.h, rt.pattern
		a.mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			code, v, err := h(w, r)
			a.recordChange(r, pattern, code, err) // audit.go
			if err != nil {
				a.writeErr(w, r, err)
				return
			}
			writeJSON(w, code, v)
		})
	}
	a.mux.HandleFunc("/", a.notFound)
	return a
}

// ServeHTTP authenticates the request, then routes it.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	auth := r.Header.Get("Authorization")
	key, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || key == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="warren"`)
		writeJSON(w, http.StatusUnauthorized, errBody{"invalid or expired API key"})
		return
	}
	k, err := a.st.ValidateAPIKey(r.Context(), strings.TrimSpace(key))
	if err != nil {
		if store.IsUnavailable(err) {
			a.unavailable(w, r, err)
			return
		}
		if !errors.Is(err, store.ErrAuthKeyInvalid) && !errors.Is(err, store.ErrAuthKeyExpired) {
			a.log.Error("admin: validating an API key failed", "method", r.Method, "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusInternalServerError, errBody{"internal server error"})
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="warren", error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, errBody{"invalid or expired API key"})
		return
	}
	if k.Scope != store.ScopeAdmin && !scopeAllows(k.Scope, r) {
		writeJSON(w, http.StatusForbidden, errBody{"this is a relay key: it may only list node keys (GET " + RelayNodesPath + ")"})
		return
	}
	a.mux.ServeHTTP(w, withActor(r, "apikey:"+k.Prefix))
}

// scopeAllows reports whether a key of a scope other than admin may make
// request r: a relay key only lists node keys.
func scopeAllows(scope string, r *http.Request) bool {
	return scope == store.ScopeRelay && r.Method == http.MethodGet && r.URL.Path == RelayNodesPath
}

// notFound answers a path no route matches: 405 if another method would
// match it, else 404.
func (a *api) notFound(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := a.mux.Handler(r2); p != "/" && p != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, errBody{fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", "))})
		return
	}
	writeJSON(w, http.StatusNotFound, errBody{fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
}

type errBody struct {
	Error string `json:"error"`
}

// apiError is an error with its HTTP status; its message is shown as is.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &apiError{code, fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	if code == http.StatusNoContent {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeErr writes err as a one-line JSON error with its status.
func (a *api) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeJSON(w, ae.code, errBody{oneLine(ae.msg)})
		return
	}
	if store.IsUnavailable(err) {
		a.unavailable(w, r, err)
		return
	}
	a.log.Error("admin: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusInternalServerError, errBody{"internal server error"})
}

// unavailableMsg is the answer to a request that failed because the
// database is out of reach (stopped, restarting): the caller did nothing
// wrong and may try again.
const unavailableMsg = "the database is unreachable: try again once it is back"

// unavailable answers 503 with unavailableMsg (the detail goes to the log).
func (a *api) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	a.log.Warn("admin: the database is unreachable", "method", r.Method, "path", r.URL.Path, "err", err)
	w.Header().Set("Retry-After", "5")
	writeJSON(w, http.StatusServiceUnavailable, errBody{unavailableMsg})
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// storeErr turns a store error into an apiError for what: not found,
// conflict and invalid become 404, 409 and 400; anything else stays
// internal.
func storeErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "%s not found", what)
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusConflict, "%s already exists", what)
	case errors.Is(err, store.ErrInvalid):
		msg := err.Error()
		if i := strings.Index(msg, store.ErrInvalid.Error()+": "); i >= 0 {
			msg = msg[i+len(store.ErrInvalid.Error())+2:]
		}
		return errorf(http.StatusBadRequest, "%s: invalid: %s", what, msg)
	case errors.Is(err, context.Canceled):
		return errorf(http.StatusServiceUnavailable, "request canceled")
	}
	return err
}

// decode reads one JSON object from the body into v: at most MaxBody bytes,
// unknown fields and trailing data refused.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", MaxBody)
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "empty request body (want a JSON object)")
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return errorf(http.StatusBadRequest, "invalid JSON body: %s", msg)
}

// ParseDuration is time.ParseDuration that also accepts whole days ("30d").
// Durations must be positive.
func ParseDuration(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if n, ok := strings.CutSuffix(s, "d"); ok && n != "" && !strings.ContainsAny(n, "hmsuµn.") {
		var days int64
		days, err = strconv.ParseInt(n, 10, 32)
		d = time.Duration(days) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (examples: 90m, 12h, 30d)", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return d, nil
}

// expiryOf turns an optional duration from a request into an absolute time.
func expiryOf(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return time.Time{}, errorf(http.StatusBadRequest, "expiration: %v", err)
	}
	return time.Now().Add(d), nil
}

// pathID parses a numeric ID from the path.
func pathID(r *http.Request, name, what string) (int64, error) {
	s := r.PathValue(name)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, errorf(http.StatusBadRequest, "%s ID %q is not a positive integer", what, s)
	}
	return id, nil
}
