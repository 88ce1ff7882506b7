package console

import (
	"errors"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/store"
)

// handler is a page or action of a signed-in admin; tok is the session's
// cookie token.
type handler func(w http.ResponseWriter, r *http.Request, tok string, ss *session)

func (c *Console) routes() {
	static, _ := fs.Sub(staticFS, "static")
	c.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET "+Prefix+"signin", c.signInPage)
	c.mux.HandleFunc("POST "+Prefix+"signin", c.signIn)
	c.mux.HandleFunc("GET "+Prefix+"{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"nodes", http.StatusSeeOther)
	})
	gets := map[string]handler{
		"nodes":      c.nodesPage,
		"nodes/{id}": c.nodePage,
		"events":     c.events,
		"users":      c.usersPage,
		"keys":       c.keysPage,
		"dns":        c.dnsPage,
		"policy":     c.policyPage,
	}
	if c.audit {
		gets["audit"] = c.auditPage
	}
	for p, h := range gets {
		c.mux.HandleFunc("GET "+Prefix+p, c.signedIn(h))
	}
	posts := map[string]handler{
		"signout":                    c.signOut,
		"nodes/{id}/rename":          c.nodeRename,
		"nodes/{id}/expire":          c.nodeExpire,
		"nodes/{id}/delete":          c.nodeDelete,
		"nodes/{id}/tags":            c.nodeTags,
		"nodes/{id}/routes":          c.nodeRoutes,
		"users":                      c.userCreate,
		"users/{name}/rename":        c.userRename,
		"users/{name}/delete":        c.userDelete,
		"keys":                       c.keyCreate,
		"keys/{id}/expire":           c.keyExpire,
		"keys/{id}/delete":           c.keyDelete,
		"dns/records":                c.dnsRecordAdd,
		"dns/records/{id}/delete":    c.dnsRecordDelete,
		"dns/zones":                  c.dnsZoneAdd,
		"dns/zones/{zone}/delete":    c.dnsZoneDelete,
		"dns/routes":                 c.dnsRouteAdd,
		"dns/routes/{domain}/delete": c.dnsRouteDelete,
		"policy":                     c.policySave,
	}
	for p, h := range posts {
		c.mux.HandleFunc("POST "+Prefix+p, c.signedIn(c.checkCSRF(h)))
	}
}

// signedIn runs h for a signed-in admin; anyone else is sent to the
// sign-in page (a GET) or refused (anything else).
func (c *Console) signedIn(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ss, ok := c.current(r)
		if !ok {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/events") {
				if _, started := c.adopt(w, r); !started {
					http.Redirect(w, r, Prefix+"signin", http.StatusSeeOther)
				}
				return
			}
			http.Error(w, "not signed in (or the session ended)", http.StatusUnauthorized)
			return
		}
		// The admin API's audit log names the person and their address.
		r = r.WithContext(admin.WithActor(r.Context(), ss.id.actor(), r.RemoteAddr))
		h(w, r, tok, &ss)
	}
}

// checkCSRF refuses a form without the session's CSRF token.
func (c *Console) checkCSRF(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
		if !csrfOK(ss, r) {
			c.log.Warn("console: request without the session's CSRF token refused", "path", r.URL.Path, "from", r.RemoteAddr, "user", ss.id.User)
			http.Error(w, "refused: the form's CSRF token is missing or wrong (reload the page)", http.StatusForbidden)
			return
		}
		h(w, r, tok, ss)
	}
}

type signInData struct {
	Methods []methodLink
}

type methodLink struct{ URL, Label string }

func (c *Console) signInPage(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := c.current(r); ok {
		http.Redirect(w, r, Prefix+"nodes", http.StatusSeeOther)
		return
	}
	refusal, started := c.adopt(w, r)
	if started {
		return
	}
	code := http.StatusOK
	if refusal != "" {
		code = http.StatusForbidden
	}
	c.renderSignIn(w, code, refusal)
}

func (c *Console) renderSignIn(w http.ResponseWriter, code int, msg string) {
	d := signInData{}
	for _, a := range c.o.Authenticators {
		d.Methods = append(d.Methods, methodLink{a.SignInURL(Prefix + "nodes"), a.Label()})
	}
	c.render(w, code, "signin", &page{Title: "Sign in", Error: msg, Data: d})
}

// signIn checks a posted admin API key and starts a session.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimSpace(r.PostFormValue("key"))
	k, err := c.o.Store.ValidateAPIKey(r.Context(), key)
	switch {
	case err == nil && k.Scope != store.ScopeAdmin:
		err = store.ErrAuthKeyInvalid
	case err != nil && !errors.Is(err, store.ErrAuthKeyInvalid) && !errors.Is(err, store.ErrAuthKeyExpired):
		c.log.Error("console: validating an API key failed", "err", err)
		c.renderSignIn(w, http.StatusInternalServerError, "internal server error")
		return
	}
	if err != nil {
		c.log.Warn("console: sign-in refused", "method", "apikey", "from", r.RemoteAddr)
		c.renderSignIn(w, http.StatusUnauthorized, "invalid or expired admin API key")
		return
	}
	c.startSession(w, r, Identity{User: "API key " + k.Prefix, Admin: true, Method: "apikey", APIKeyID: k.ID, keyPrefix: k.Prefix}, Prefix+"nodes")
}

// startSession starts a console session for id and sends the browser to
// next (a console path).
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, id Identity, next string) {
	if old := cookieToken(r); old != "" {
		c.sess.delete(old) // never keep a token from before sign-in
	}
	tok := c.sess.create(id, c.clk.Now())
	c.setCookie(w, tok, int(c.o.MaxAge/time.Second))
	c.log.Info("console: signed in", "user", id.User, "method", id.Method, "from", r.RemoteAddr)
	if next == Prefix+"signin" || !strings.HasPrefix(next, Prefix) {
		next = Prefix + "nodes"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	c.sess.delete(tok)
	c.setCookie(w, "", -1)
	if a, ok := c.auth[ss.id.Method]; ok {
		a.SignOut(w, r)
	}
	http.Redirect(w, r, Prefix+"signin", http.StatusSeeOther)
}

// after ends an action: back to where the admin was (a console path
// only), with msg (or the error) shown once.
func (c *Console) after(w http.ResponseWriter, r *http.Request, tok, back, msg string, err error) {
	if err != nil {
		msg = "Error: " + err.Error()
	}
	c.sess.setFlash(tok, msg)
	if !strings.HasPrefix(back, Prefix) || strings.Contains(back, "//") {
		back = Prefix + "nodes"
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// newPage is a page for a signed-in admin, taking the one-time message.
func (c *Console) newPage(tok string, ss *session, title, nav string) *page {
	p := &page{Title: title, Nav: nav, Who: ss.id.User, CSRF: ss.csrf, Audit: c.audit}
	if f := c.sess.takeFlash(tok); strings.HasPrefix(f, "Error: ") {
		p.Error = strings.TrimPrefix(f, "Error: ")
	} else {
		p.Flash = f
	}
	return p
}
