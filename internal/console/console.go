// Package console owns the web console that `warren server` serves under
// /admin/ (docs/CONSOLE.md): server-rendered pages (html/template, every
// file embedded in the binary) for nodes, users, auth keys, DNS and the
// access policy, whose every action is a request to the admin API's own
// routes made in-process (admin.Caller), and a live nodes page fed by the
// control server's world through server-sent events.
//
// Sign-in is with an admin API key, or with an Authenticator (the hook
// for OIDC). A session lives in a server-side table; the browser holds
// only a random token in an HttpOnly, SameSite=Strict cookie (Secure when
// the server is reached over TLS). Every state-changing request must come
// from the console's own origin (Origin and Sec-Fetch-Site) and carry the
// session's CSRF token; pages are served with a strict Content Security
// Policy (scripts only from the console's own embedded file, no inline
// script or style), no caching and no framing. Secrets never appear in
// URLs: keys are posted in bodies and a new auth key is shown once, in
// the response to the form that created it.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/store"
)

// Prefix is where the console is mounted.
const Prefix = "/admin/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Authenticator is a sign-in method besides an admin API key, with a
// browser session of its own on the server (OIDC: package oidcauth's
// session cookie). The sign-in page shows a button labelled Label leading
// to SignInURL(next), where the method signs the person in and sends the
// browser back to next. On a GET of a console page without a console
// session, the console asks Authenticate who the request's session is;
// an admin gets a console session (its own token and CSRF token), which
// ends when Authenticate stops vouching for the same user. Signing out of
// the console also calls SignOut.
type Authenticator interface {
	ID() string // names the method in logs and sessions, e.g. "oidc"
	Label() string
	SignInURL(next string) string
	Authenticate(r *http.Request) (user string, admin bool, ok bool)
	SignOut(w http.ResponseWriter, r *http.Request)
}

// World is what the live nodes page watches: the control server's world
// (server.Server implements it).
type World interface {
	WatchNodes() (<-chan struct{}, func())
	Nodes() []server.NodeState
}

// Options configure the console.
type Options struct {
	// Store validates the admin API keys people sign in with.
	Store *store.Store
	// API is the admin API the console's actions go through.
	API admin.Caller
	// World feeds the live nodes page; nil serves the page without
	// live updates.
	World World
	// Secure marks the session cookie Secure: set it when the server is
	// reached over HTTPS (its own TLS, or a proxy in front).
	Secure bool
	// IdleTimeout ends a session unused for this long (default 1 hour);
	// MaxAge ends any session this long after sign-in (default 12 hours).
	IdleTimeout, MaxAge time.Duration
	// Authenticators are the other sign-in methods (OIDC).
	Authenticators []Authenticator
	// Logger gets sign-ins (info), refusals (warning) and failures
	// (error); nil discards.
	Logger *slog.Logger
	// Clock is the time sessions and key expiry are judged by; nil is the
	// real clock.
	Clock clock.Clock
}

// Console is the console's HTTP handler; mount it at Prefix.
type Console struct {
	o     Options
	log   *slog.Logger
	sess  *sessions
	pages map[string]*template.Template
	mux   *http.ServeMux
	auth  map[string]Authenticator // by ID
	done  chan struct{}
	// closeOnce closes done.
	closeOnce sync.Once
	clk       clock.Clock
	audit     bool // the admin API has an audit log (GET /api/v1/audit): the audit page is served
}

// New returns the console.
func New(o Options) (*Console, error) {
	if o.Store == nil || o.API == nil {
		return nil, errors.New("console: a store and the admin API are required")
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = time.Hour
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 12 * time.Hour
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Console{o: o, log: log, sess: newSessions(o.IdleTimeout, o.MaxAge, 10000), mux: http.NewServeMux(),
		auth: map[string]Authenticator{}, done: make(chan struct{}), clk: clock.Or(o.Clock)}
	for _, a := range o.Authenticators {
		c.auth[a.ID()] = a
	}
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	code, _ := o.API.Call(context.Background(), http.MethodGet, auditPath+"?limit=1", nil)
	c.audit = code == http.StatusOK
	c.routes()
	return c, nil
}

// Close ends the live streams (call it when the server shuts down). It may
// be called more than once, also at the same time (the server both defers
// it and registers it with its HTTP server's Shutdown).
func (c *Console) Close() {
	c.closeOnce.Do(func() { close(c.done) })
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"when": when,
		"join": func(s []string) string { return strings.Join(s, ", ") },
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, err
		}
		out[base] = t
	}
	return out, nil
}

// when formats an optional time for a table cell.
func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// csp is the Content Security Policy of every response: nothing inline,
// scripts, styles and images only from the console itself.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP sets the security headers and routes the request.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // not no-referrer: Chromium then sends "Origin: null" with the console's own forms
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, Prefix+"static/") {
		h.Set("Cache-Control", "no-store")
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if why := crossOrigin(r); why != "" {
			c.log.Warn("console: cross-origin request refused", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr, "reason", why)
			http.Error(w, "cross-origin request refused: "+why, http.StatusForbidden)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, admin.MaxBody+(2<<20)) // a policy is up to 1 MiB, form-encoded
	}
	c.mux.ServeHTTP(w, r)
}

// crossOrigin explains why a state-changing request did not come from the
// console's own pages ("" if it did): a browser says where a request comes
// from in Sec-Fetch-Site and Origin, and a form of the console sends
// same-origin and the console's own origin.
func crossOrigin(r *http.Request) string {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return "Sec-Fetch-Site is " + s
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return "" // not a browser's form (a browser that sends neither header is older than every supported one)
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return "Origin " + o + " is not this server"
	}
	return ""
}

const cookieName = "warren_console"

func (c *Console) setCookie(w http.ResponseWriter, tok string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: Prefix, HttpOnly: true, Secure: c.o.Secure,
		SameSite: http.SameSiteStrictMode, MaxAge: maxAge})
}

func cookieToken(r *http.Request) string {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	return ck.Value
}

// current returns the request's live session, checking that what it was
// signed in with still vouches for it: the API key is still valid, or the
// Authenticator still names the same admin.
func (c *Console) current(r *http.Request) (string, session, bool) {
	tok := cookieToken(r)
	ss, ok := c.sess.get(tok, c.clk.Now())
	if !ok {
		return "", session{}, false
	}
	if ss.id.APIKeyID != 0 && !c.keyValid(r.Context(), ss.id.APIKeyID) {
		c.sess.endKey(ss.id.APIKeyID)
		return "", session{}, false
	}
	if a, ok := c.auth[ss.id.Method]; ok {
		if user, admin, ok := a.Authenticate(r); !ok || !admin || user != ss.id.User {
			c.sess.delete(tok)
			return "", session{}, false
		}
	}
	return tok, ss, true
}

// adopt gives a GET request without a console session one, if an
// Authenticator vouches for an admin; a person it vouches for who is not
// an admin gets the reason. ok is true when a session was started (the
// browser is sent to the same page again, with its cookie).
func (c *Console) adopt(w http.ResponseWriter, r *http.Request) (refusal string, ok bool) {
	for _, a := range c.o.Authenticators {
		user, admin, signedIn := a.Authenticate(r)
		if !signedIn {
			continue
		}
		if !admin {
			c.log.Warn("console: sign-in refused: not an admin", "method", a.ID(), "user", user, "from", r.RemoteAddr)
			return user + " is signed in but is not an administrator of this network", false
		}
		c.startSession(w, r, Identity{User: user, Admin: true, Method: a.ID()}, r.URL.Path)
		return "", true
	}
	return "", false
}

// keyValid reports whether admin API key id still exists, unexpired.
func (c *Console) keyValid(ctx context.Context, id int64) bool {
	ks, err := c.o.Store.ListAPIKeys(ctx)
	if err != nil {
		c.log.Error("console: reading API keys failed", "err", err)
		return false
	}
	now := c.clk.Now()
	for _, k := range ks {
		if k.ID == id {
			return k.Scope == store.ScopeAdmin && (k.Expiry.IsZero() || now.Before(k.Expiry))
		}
	}
	return false
}

// page is what every template gets.
type page struct {
	Title string
	Nav   string
	Who   string
	CSRF  string
	Flash string
	Error string
	Live  bool // the nodes page: console.js opens the event stream
	Audit bool // the audit page is served (nav link)
	Data  any
}

func (c *Console) render(w http.ResponseWriter, code int, name string, p *page) {
	t, ok := c.pages[name]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		c.log.Error("console: rendering a page failed", "page", name, "err", err)
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(buf.String()))
}

// call makes an admin API request and decodes a success into out; a
// refusal is returned as an error holding the API's one-line message.
func (c *Console) call(ctx context.Context, method, path string, body, out any) error {
	code, b := c.o.API.Call(ctx, method, path, body)
	if code >= 300 {
		var e struct {
			Error    string   `json:"error"`
			Problems []string `json:"problems"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(code)
		}
		return &apiError{code: code, msg: e.Error, problems: e.Problems}
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// apiError is a refusal by the admin API.
type apiError struct {
	code     int
	msg      string
	problems []string
}

func (e *apiError) Error() string { return e.msg }
