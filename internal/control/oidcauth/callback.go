package oidcauth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/warrenmesh/warren/internal/control/audit"
	"github.com/warrenmesh/warren/internal/store"
)

// claims are the ID token's claims sign-in looks at.
type claims struct {
	Subject       string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified *bool  `json:"email_verified"`
	Username      string `json:"preferred_username"`
	groups        []string
}

// callback finishes a sign-in: the login session (taken once), the state,
// the code exchange with the PKCE verifier, the ID token and its nonce,
// the allow lists; then the user and a session.
func (a *Auth) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var l *login
	if c, err := r.Cookie(loginCookie); err == nil {
		l = a.takeLogin(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: Prefix, MaxAge: -1,
		Secure: a.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	refuse := func(code int, who, reason, shown string) {
		audit.Record(r.Context(), a.st, a.log, r, who, "signin", "", reason, false)
		a.page(w, code, "Sign-in refused", shown)
	}
	if l == nil {
		refuse(http.StatusBadRequest, "oidc:unknown", "no or used login session",
			"This sign-in link was already used or has expired. Start again from the beginning.")
		return
	}
	if e := q.Get("error"); e != "" {
		refuse(http.StatusForbidden, "oidc:unknown", "provider error: "+e, "The identity provider refused the sign-in ("+e+").")
		return
	}
	if st := q.Get("state"); subtle.ConstantTimeCompare([]byte(st), []byte(l.state)) != 1 {
		refuse(http.StatusBadRequest, "oidc:unknown", "state mismatch", "The sign-in state does not match. Start again from the beginning.")
		return
	}
	ctx := a.ctx(r.Context())
	tok, err := a.oauth.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(l.verifier))
	if err != nil {
		a.log.Info("oidc: code exchange failed", "err", err)
		refuse(http.StatusBadRequest, "oidc:unknown", "code exchange failed", "The identity provider did not accept the sign-in code.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := a.verifier.Verify(ctx, raw)
	if err != nil {
		a.log.Info("oidc: ID token refused", "err", err)
		refuse(http.StatusBadRequest, "oidc:unknown", "ID token invalid", "The identity provider's answer could not be verified.")
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(l.nonce)) != 1 {
		refuse(http.StatusBadRequest, "oidc:"+idt.Subject, "nonce mismatch", "The sign-in answer does not belong to this sign-in.")
		return
	}
	c, err := a.readClaims(idt)
	if err != nil {
		refuse(http.StatusBadRequest, "oidc:"+idt.Subject, err.Error(), "The identity provider's answer is incomplete: "+err.Error()+".")
		return
	}
	who := "oidc:" + c.Email
	if c.Email == "" {
		who = "oidc:" + c.Subject
	}
	if why := a.refusal(c); why != "" {
		refuse(http.StatusForbidden, who, why, fmt.Sprintf("%s may not sign in to this network: %s.", orSubject(c), why))
		return
	}
	u, err := a.st.SignIn(r.Context(), idt.Issuer, c.Subject, c.Email, store.SignInOptions{Create: a.cfg.CreateUsers, Name: userName(c)})
	if errors.Is(err, store.ErrNotFound) {
		refuse(http.StatusForbidden, who, "no such user", fmt.Sprintf("%s has no user on this network; ask an admin to create one.", orSubject(c)))
		return
	} else if err != nil {
		a.log.Error("oidc: sign-in failed", "err", err)
		a.page(w, http.StatusInternalServerError, "Sign-in failed", "The server could not complete the sign-in.")
		return
	}
	admin := a.isAdmin(c)
	if err := a.st.DeleteExpiredWebSessions(r.Context()); err != nil { // housekeeping, at the rate of sign-ins
		a.log.Warn("oidc: removing expired sessions failed", "err", err)
	}
	token, _, err := a.st.CreateWebSession(r.Context(), u.ID, c.Email, admin, a.cfg.SessionTTL)
	if err != nil {
		a.log.Error("oidc: session failed", "err", err)
		a.page(w, http.StatusInternalServerError, "Sign-in failed", "The server could not complete the sign-in.")
		return
	}
	detail := "user " + u.Name
	if admin {
		detail += " (admin)"
	}
	audit.Record(r.Context(), a.st, a.log, r, "user:"+u.Name, "signin", "", detail, true)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: token, Path: "/", MaxAge: int(a.cfg.SessionTTL.Seconds()),
		Secure: a.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	if l.regID != "" {
		a.confirmPage(w, r, l.regID, u, c.Email) // register.go
		return
	}
	http.Redirect(w, r, l.next, http.StatusSeeOther)
}

func orSubject(c *claims) string {
	if c.Email != "" {
		return c.Email
	}
	return "This account"
}

// userName is the name of a user created on first sign-in: the email, or
// the preferred username, or "user".
func userName(c *claims) string {
	switch {
	case c.Email != "":
		return c.Email
	case c.Username != "":
		return c.Username
	}
	return "user"
}

// readClaims extracts what sign-in decides on, the groups from the
// configured claim (a list of strings or one string).
func (a *Auth) readClaims(idt *oidc.IDToken) (*claims, error) {
	var c claims
	if err := idt.Claims(&c); err != nil {
		return nil, errors.New("unreadable claims")
	}
	if c.Subject == "" {
		return nil, errors.New("no subject")
	}
	var all map[string]any
	if err := idt.Claims(&all); err != nil {
		return nil, errors.New("unreadable claims")
	}
	switch g := all[a.cfg.GroupsClaim].(type) {
	case string:
		c.groups = []string{g}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				c.groups = append(c.groups, s)
			}
		}
	}
	c.Email = strings.ToLower(strings.TrimSpace(c.Email))
	return &c, nil
}

// verified reports whether c's email counts: the provider says it is
// verified, or (AllowUnverifiedEmail) does not say it is not.
func (a *Auth) verified(c *claims) bool {
	if c.EmailVerified == nil {
		return a.cfg.AllowUnverifiedEmail
	}
	return *c.EmailVerified
}

// refusal says why c may not sign in, or "" if it may. An unverified email
// counts as no email.
func (a *Auth) refusal(c *claims) string {
	email := c.Email
	if !a.verified(c) {
		email = ""
	}
	if email != "" {
		if containsFold(a.cfg.AllowedUsers, email) {
			return ""
		}
		if _, dom, ok := strings.Cut(email, "@"); ok && containsFold(a.cfg.AllowedDomains, dom) {
			return ""
		}
	}
	for _, g := range c.groups {
		if slices.Contains(a.cfg.AllowedGroups, g) {
			return ""
		}
	}
	switch {
	case c.Email != "" && email == "":
		return "the email address is not verified"
	case email != "" && len(a.cfg.AllowedDomains) > 0:
		_, dom, _ := strings.Cut(email, "@")
		return "the email domain " + dom + " is not allowed"
	}
	return "the account is not on the allowed lists"
}

// isAdmin reports whether c is an admin: a verified email in AdminUsers or
// a group in AdminGroups.
func (a *Auth) isAdmin(c *claims) bool {
	if a.verified(c) && c.Email != "" && containsFold(a.cfg.AdminUsers, c.Email) {
		return true
	}
	for _, g := range c.groups {
		if slices.Contains(a.cfg.AdminGroups, g) {
			return true
		}
	}
	return false
}

func containsFold(l []string, s string) bool {
	return slices.ContainsFunc(l, func(x string) bool { return strings.EqualFold(x, s) })
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} · Warren</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>{{.Title}}</h1><p id="message">{{.Text}}</p>
{{- if .Form}}
<form method="post" action="{{.Form.Action}}"><input type="hidden" name="csrf" value="{{.Form.CSRF}}">
<button type="submit" name="answer" value="add">Add the machine</button>
<button type="submit" name="answer" value="cancel">Cancel</button></form>
{{- end}}</main></body></html>
`))

// form is a confirmation form on a page.
type form struct{ Action, CSRF string }

// page writes a small HTML page (no scripts, no external resources).
func (a *Auth) page(w http.ResponseWriter, code int, title, text string) {
	a.pageForm(w, code, title, text, nil)
}

func (a *Auth) pageForm(w http.ResponseWriter, code int, title, text string, f *form) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(code)
	pageTmpl.Execute(w, struct {
		Title, Text string
		Form        *form
	}{title, text, f})
}
