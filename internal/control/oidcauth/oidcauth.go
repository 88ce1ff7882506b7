// Package oidcauth owns signing people in to the coordination server
// through an OpenID Connect identity provider (authorization code flow with
// PKCE, state and nonce), deciding who may sign in (email domains, emails,
// groups from a configurable claim) and who is an admin, finding or
// creating the user by the identity's (issuer, subject), and the browser
// session that follows. It serves /oidc/start, /oidc/callback and
// /oidc/logout; other handlers (the web console, interactive node
// registration) call Authenticate to learn who a request's session belongs
// to. The short-lived login state (state, nonce, PKCE verifier, where to go
// next) lives on the server, bound to an HttpOnly cookie; nothing secret
// travels in a URL but the provider's one-time code.
package oidcauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/warrenmesh/warren/internal/store"
)

// Paths served by Handler (mount it at Prefix); RegisterPath is the
// confirmation of an interactive registration.
const (
	Prefix       = "/oidc/"
	StartPath    = "/oidc/start"
	CallbackPath = "/oidc/callback"
	LogoutPath   = "/oidc/logout"
	RegisterPath = "/oidc/register" // the person confirms adding a machine
)

// Cookie names.
const (
	SessionCookie = "warren_session" // the signed-in browser session (Path /)
	loginCookie   = "warren_login"   // the login in progress (Path /oidc/)
)

// Defaults.
const (
	DefaultSessionTTL  = 12 * time.Hour
	DefaultGroupsClaim = "groups"
	loginTTL           = 10 * time.Minute
	maxLogins          = 10000 // logins in progress at once (memory bound)
)

// DefaultScopes are the scopes asked for when Config.Scopes is empty.
var DefaultScopes = []string{oidc.ScopeOpenID, "email", "profile"}

// Config configures sign-in.
type Config struct {
	Issuer       string // the provider's issuer URL (discovery at ISSUER/.well-known/openid-configuration)
	ClientID     string
	ClientSecret string
	Scopes       []string // default DefaultScopes; "openid" is added if missing
	// RedirectURL is this server's callback, PUBLIC_URL + CallbackPath. Its
	// scheme decides the cookies' Secure flag (https: Secure).
	RedirectURL string

	// Who may sign in: an email in AllowedUsers, an email whose domain is
	// in AllowedDomains, or a member of a group in AllowedGroups (read from
	// GroupsClaim, default "groups"). At least one must be set: an empty
	// allow list refuses everyone.
	AllowedDomains, AllowedUsers, AllowedGroups []string
	GroupsClaim                                 string
	// AllowUnverifiedEmail lets an email count when the ID token has no
	// email_verified claim (some providers never send it); an explicit
	// email_verified false never counts.
	AllowUnverifiedEmail bool
	// Who is an admin (may use the web console's admin pages).
	AdminUsers, AdminGroups []string
	// CreateUsers creates a user on the first sign-in of a new identity;
	// without it the user must exist already (named by the email).
	CreateUsers bool
	SessionTTL  time.Duration // default DefaultSessionTTL

	HTTPClient *http.Client // talks to the provider; default http.DefaultClient
	Logger     *slog.Logger
	Now        func() time.Time // default time.Now
	// OnRegister completes an interactive node registration: a sign-in
	// started with StartURL's registration ID calls it with the user who
	// signed in; its text is shown to the person.
	OnRegister func(ctx context.Context, r *http.Request, regID string, u *store.User, email string) (string, error)
}

// Auth signs people in. Create it with New.
type Auth struct {
	cfg      Config
	st       *store.Store
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	secure   bool
	origin   string // scheme://host[:port] of the redirect URL
	log      *slog.Logger

	mu     sync.Mutex
	logins map[string]*login // by the login cookie's value
}

// login is a sign-in in progress.
type login struct {
	state, nonce, verifier string
	next                   string // local path to return to
	regID                  string // interactive registration, or ""
	expiry                 time.Time
	// A signed-in person asked to confirm adding regID's machine (state
	// is then the form's CSRF token).
	user  *store.User
	email string
}

// Session is who a request is signed in as.
type Session struct {
	User   *store.User
	Email  string
	Admin  bool
	Expiry time.Time
}

// ErrNoSession is Authenticate's answer for a request without a live
// session.
var ErrNoSession = errors.New("oidcauth: not signed in")

// New discovers the provider and returns the sign-in handler.
func New(ctx context.Context, st *store.Store, c Config) (*Auth, error) {
	if c.Issuer == "" || c.ClientID == "" || c.RedirectURL == "" {
		return nil, errors.New("oidc: issuer, client ID and redirect URL are required")
	}
	if len(c.AllowedDomains)+len(c.AllowedUsers)+len(c.AllowedGroups) == 0 {
		return nil, errors.New("oidc: no allowed domains, users or groups: nobody could sign in")
	}
	ru, err := url.Parse(c.RedirectURL)
	if err != nil || (ru.Scheme != "https" && ru.Scheme != "http") {
		return nil, fmt.Errorf("oidc: redirect URL %q is not an http(s) URL", c.RedirectURL)
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = DefaultGroupsClaim
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	scopes := slices.Clone(c.Scopes)
	if len(scopes) == 0 {
		scopes = slices.Clone(DefaultScopes)
	}
	if !slices.Contains(scopes, oidc.ScopeOpenID) {
		scopes = append([]string{oidc.ScopeOpenID}, scopes...)
	}
	a := &Auth{cfg: c, st: st, secure: ru.Scheme == "https", origin: ru.Scheme + "://" + ru.Host, log: c.Logger, logins: map[string]*login{}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	p, err := oidc.NewProvider(a.ctx(ctx), c.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc: discovery at %s: %w", c.Issuer, err)
	}
	a.verifier = p.Verifier(&oidc.Config{ClientID: c.ClientID, Now: c.Now})
	a.oauth = oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: c.RedirectURL, Scopes: scopes}
	return a, nil
}

// ctx carries the HTTP client for talking to the provider.
func (a *Auth) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, a.cfg.HTTPClient)
}

// Handler serves StartPath, CallbackPath and LogoutPath; mount it at
// Prefix.
func (a *Auth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StartPath, a.start)
	mux.HandleFunc("GET "+CallbackPath, a.callback)
	mux.HandleFunc("POST "+LogoutPath, a.logout)
	mux.HandleFunc("POST "+RegisterPath, a.confirmRegister)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		mux.ServeHTTP(w, r)
	})
}

// StartURL is the local URL that starts a sign-in and then returns to next
// (a local path such as "/admin/"; anything else becomes "/").
func StartURL(next string) string {
	return StartPath + "?next=" + url.QueryEscape(localPath(next))
}

// RegisterURL is the local URL a person opens to sign in for an
// interactive node registration (regID is a one-time ID, not a secret).
func RegisterURL(regID string) string {
	return StartPath + "?reg=" + url.QueryEscape(regID)
}

// localPath returns p if it is a path on this server, else "/": no open
// redirects.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	return p
}

func randomString() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// start begins a sign-in: a login session bound to a cookie, then off to
// the provider.
func (a *Auth) start(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	reg := q.Get("reg")
	if len(reg) > 100 {
		a.page(w, http.StatusBadRequest, "Sign-in refused", "The registration ID is malformed.")
		return
	}
	l := &login{state: randomString(), nonce: randomString(), verifier: oauth2.GenerateVerifier(),
		next: localPath(q.Get("next")), regID: reg, expiry: a.cfg.Now().Add(loginTTL)}
	id := randomString()
	if !a.putLogin(id, l) {
		a.page(w, http.StatusServiceUnavailable, "Try again later", "Too many sign-ins are in progress.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: id, Path: Prefix, MaxAge: int(loginTTL / time.Second),
		Secure: a.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, a.oauth.AuthCodeURL(l.state, oidc.Nonce(l.nonce), oauth2.S256ChallengeOption(l.verifier)), http.StatusFound)
}

// putLogin stores a login in progress, pruning expired ones; false if
// there are too many.
func (a *Auth) putLogin(id string, l *login) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.logins) >= maxLogins {
		now := a.cfg.Now()
		for k, v := range a.logins {
			if !now.Before(v.expiry) {
				delete(a.logins, k)
			}
		}
		if len(a.logins) >= maxLogins {
			return false
		}
	}
	a.logins[id] = l
	return true
}

// takeLogin removes and returns the live login of a cookie: each login
// completes at most once.
func (a *Auth) takeLogin(id string) *login {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.logins[id]
	delete(a.logins, id)
	if l == nil || !a.cfg.Now().Before(l.expiry) {
		return nil
	}
	return l
}

// Authenticate returns the session of request r (its session cookie), or
// ErrNoSession.
func (a *Auth) Authenticate(r *http.Request) (*Session, error) {
	return authenticate(r, a.st)
}

// SessionOf is Authenticate without an Auth: the web console can check a
// session cookie even when OIDC is not configured (then no session exists).
func SessionOf(r *http.Request, st *store.Store) (*Session, error) {
	return authenticate(r, st)
}

func authenticate(r *http.Request, st *store.Store) (*Session, error) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return nil, ErrNoSession
	}
	ws, err := st.WebSessionByToken(r.Context(), c.Value)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoSession
	} else if err != nil {
		return nil, err
	}
	u, err := st.GetUser(r.Context(), ws.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoSession
	} else if err != nil {
		return nil, err
	}
	return &Session{User: u, Email: ws.Email, Admin: ws.Admin, Expiry: ws.Expiry}, nil
}

// SignOut ends r's session and clears its cookie.
func (a *Auth) SignOut(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		if err := a.st.DeleteWebSession(r.Context(), c.Value); err != nil && !errors.Is(err, store.ErrNotFound) {
			a.log.Error("oidc: sign-out failed", "err", err)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		Secure: a.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// SameOrigin reports whether a state-changing request comes from this
// server's own pages: Sec-Fetch-Site same-origin (or absent) and an Origin,
// if sent, equal to the public URL's.
func (a *Auth) SameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != a.origin {
		return false
	}
	return true
}

// logout is POST /oidc/logout: only from this server's own pages
// (SameOrigin), then back to "/".
func (a *Auth) logout(w http.ResponseWriter, r *http.Request) {
	if !a.SameOrigin(r) {
		a.page(w, http.StatusForbidden, "Sign-out refused", "The request came from another site.")
		return
	}
	a.SignOut(w, r)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
