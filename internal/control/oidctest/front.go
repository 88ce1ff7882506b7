package oidctest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/warrenmesh/warren/internal/control/oidcauth"
	"github.com/warrenmesh/warren/internal/store"
)

// Front is the server's sign-in (package oidcauth) on its own HTTPS test
// server, so that its URL is known before the control server starts.
type Front struct {
	Srv  *httptest.Server
	Auth *oidcauth.Auth
	mux  *http.ServeMux
}

// NewFront starts an empty HTTPS front; Mount adds the sign-in.
func NewFront(t testing.TB) *Front {
	t.Helper()
	f := &Front{mux: http.NewServeMux()}
	f.Srv = httptest.NewUnstartedServer(f.mux)
	f.Srv.StartTLS()
	t.Cleanup(f.Srv.Close)
	return f
}

// Mount serves sign-in against p over st: users of example.com allowed and
// created; mod changes the configuration.
func (f *Front) Mount(t testing.TB, p *IdP, st *store.Store, mod func(*oidcauth.Config)) {
	t.Helper()
	cfg := oidcauth.Config{Issuer: p.Issuer(), ClientID: p.ClientID(), ClientSecret: p.ClientSecret(),
		RedirectURL: f.Srv.URL + oidcauth.CallbackPath, AllowedDomains: []string{"example.com"}, CreateUsers: true}
	if mod != nil {
		mod(&cfg)
	}
	a, err := oidcauth.New(context.Background(), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.Auth = a
	f.mux.Handle(oidcauth.Prefix, a.Handler())
}

// Browser is a scripted browser that trusts the front's certificate.
func (f *Front) Browser(t testing.TB) *Browser {
	return NewBrowser(t, f.Srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone())
}
