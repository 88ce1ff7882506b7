package cli

import (
	"net/http"

	"github.com/warrenmesh/warren/internal/control/oidcauth"
)

// oidcConsole lets people who signed in with the identity provider use
// the web console (admins by the server's oidc_admin_* settings).
type oidcConsole struct{ a *oidcauth.Auth }

func (o oidcConsole) ID() string                   { return "oidc" }
func (o oidcConsole) Label() string                { return "Sign in with your identity provider" }
func (o oidcConsole) SignInURL(next string) string { return oidcauth.StartURL(next) }
func (o oidcConsole) SignOut(w http.ResponseWriter, r *http.Request) {
	o.a.SignOut(w, r)
}

func (o oidcConsole) Authenticate(r *http.Request) (string, bool, bool) {
	s, err := o.a.Authenticate(r)
	if err != nil || s == nil || s.User == nil {
		return "", false, false
	}
	return s.User.Name, s.Admin, true
}
