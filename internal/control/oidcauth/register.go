package oidcauth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"

	"github.com/warrenmesh/warren/internal/control/audit"
	"github.com/warrenmesh/warren/internal/store"
)

// confirmPage asks the person who just signed in for an interactive
// registration to confirm adding the machine, naming it: a link someone
// else sent does not add their machine unnoticed. The answer comes back
// as a POST to RegisterPath with a one-time CSRF token, bound to a new
// login cookie.
func (a *Auth) confirmPage(w http.ResponseWriter, r *http.Request, regID string, u *store.User, email string) {
	if a.cfg.OnRegister == nil {
		a.page(w, http.StatusNotFound, "Machine not added", "This server does not register machines by signing in.")
		return
	}
	reg, err := a.st.GetRegistration(r.Context(), regID)
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && (reg.NodeID != 0 || !a.cfg.Now().Before(reg.Expiry))):
		audit.Record(r.Context(), a.st, a.log, r, "user:"+u.Name, "node.register", "registration "+regID, "unknown, used or expired", false)
		a.page(w, http.StatusBadRequest, "Machine not added", "This machine link is unknown, was already used or has expired. Run warren up on the machine again.")
		return
	case err != nil:
		a.log.Error("oidc: registration lookup failed", "err", err)
		a.page(w, http.StatusInternalServerError, "Machine not added", "The server could not look up the machine.")
		return
	}
	l := &login{state: randomString(), regID: regID, user: u, email: email, expiry: a.cfg.Now().Add(loginTTL)}
	id := randomString()
	if !a.putLogin(id, l) {
		a.page(w, http.StatusServiceUnavailable, "Try again later", "Too many sign-ins are in progress.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: id, Path: Prefix, MaxAge: int(loginTTL.Seconds()),
		Secure: a.secure, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	a.pageForm(w, http.StatusOK, "Add this machine?",
		fmt.Sprintf("Add the machine %q to the network as %s? Only confirm if you just ran warren up on it yourself.", reg.Hostname, u.Name),
		&form{Action: RegisterPath, CSRF: l.state})
}

// confirmRegister is the person's answer: same origin, the login cookie
// (taken once) and its CSRF token; then the registration completes.
func (a *Auth) confirmRegister(w http.ResponseWriter, r *http.Request) {
	if !a.SameOrigin(r) {
		a.page(w, http.StatusForbidden, "Machine not added", "The request came from another site.")
		return
	}
	var l *login
	if c, err := r.Cookie(loginCookie); err == nil {
		l = a.takeLogin(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: Prefix, MaxAge: -1,
		Secure: a.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if l == nil || l.user == nil || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(l.state)) != 1 {
		a.page(w, http.StatusBadRequest, "Machine not added", "This confirmation was already used, has expired or is not yours. Run warren up on the machine again.")
		return
	}
	if r.PostFormValue("answer") != "add" {
		audit.Record(r.Context(), a.st, a.log, r, "user:"+l.user.Name, "node.register", "registration "+l.regID, "canceled by the person", false)
		a.page(w, http.StatusOK, "Machine not added", "You canceled adding the machine.")
		return
	}
	msg, err := a.cfg.OnRegister(context.WithoutCancel(r.Context()), r, l.regID, l.user, l.email)
	if err != nil {
		a.page(w, http.StatusBadRequest, "Machine not added", err.Error())
		return
	}
	a.page(w, http.StatusOK, "Machine added", msg)
}
