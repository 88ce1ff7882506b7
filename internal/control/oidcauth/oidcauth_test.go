package oidcauth_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/oidcauth"
	"github.com/warrenmesh/warren/internal/control/oidctest"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/store/storetest"
)

// rig is a Warren server front (HTTPS, so the cookies are Secure) with
// sign-in against a local IdP.
type rig struct {
	idp  *oidctest.IdP
	st   *store.Store
	auth *oidcauth.Auth
	srv  *httptest.Server
}

func newRig(t *testing.T, dsn string, mod func(*oidcauth.Config)) *rig {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{idp: oidctest.Start(t), st: st}
	mux := http.NewServeMux()
	r.srv = httptest.NewUnstartedServer(mux)
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	cfg := oidcauth.Config{Issuer: r.idp.Issuer(), ClientID: r.idp.ClientID(), ClientSecret: r.idp.ClientSecret(),
		RedirectURL: r.srv.URL + oidcauth.CallbackPath, Scopes: []string{"openid", "email", "profile", "groups"},
		AllowedDomains: []string{"example.com"}, AdminGroups: []string{"vpn-admins"}, CreateUsers: true}
	if mod != nil {
		mod(&cfg)
	}
	r.auth, err = oidcauth.New(ctx, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(oidcauth.Prefix, r.auth.Handler())
	mux.HandleFunc("GET /admin/", func(w http.ResponseWriter, req *http.Request) {
		s, err := r.auth.Authenticate(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "user=%s email=%s admin=%v", s.User.Name, s.Email, s.Admin)
	})
	return r
}

func (r *rig) browser(t *testing.T) *oidctest.Browser {
	return oidctest.NewBrowser(t, r.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone())
}

func (r *rig) audit(t *testing.T) []*store.AuditEntry {
	t.Helper()
	es, err := r.st.ListAudit(context.Background(), store.AuditEntry{}.At, 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func each(t *testing.T, f func(t *testing.T, dsn string)) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) { f(t, b.DSN(t)) })
	}
}

// TestSignInCreatesUserKeyedBySubject: a first sign-in creates the user
// and a session (an admin by group); a second sign-in of the same subject
// with another email is the same user.
func TestSignInCreatesUserKeyedBySubject(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		r := newRig(t, dsn, nil)
		r.idp.Queue(oidctest.Person{Subject: "sub-alice", Email: "Alice@Example.com", EmailVerified: true, Groups: []string{"vpn-admins"}})
		b := r.browser(t)
		code, final, body := b.Get(t, r.srv.URL+oidcauth.StartURL("/admin/nodes"))
		if code != 200 || final.Path != "/admin/nodes" || body != "user=alice@example.com email=alice@example.com admin=true" {
			t.Fatalf("after sign-in: %d %s %q", code, final, body)
		}
		for _, c := range b.Client.Jar.Cookies(final) {
			if c.Name == oidcauth.SessionCookie && !strings.HasPrefix(c.Value, "wses_") {
				t.Fatalf("session cookie %q", c.Value)
			}
		}
		ids, _ := r.st.ListIdentities(context.Background(), 0)
		if len(ids) != 1 || ids[0].Issuer != r.idp.Issuer() || ids[0].Subject != "sub-alice" {
			t.Fatalf("identities %+v", ids)
		}
		// Same subject, new email, not an admin any more: same user.
		r.idp.Queue(oidctest.Person{Subject: "sub-alice", Email: "alice@example.com", EmailVerified: true})
		b2 := r.browser(t)
		if _, _, body := b2.Get(t, r.srv.URL+oidcauth.StartURL("/admin/")); body != "user=alice@example.com email=alice@example.com admin=false" {
			t.Fatalf("second sign-in: %q", body)
		}
		// Another subject with the same email is another user.
		r.idp.Queue(oidctest.Person{Subject: "sub-other", Email: "alice@example.com", EmailVerified: true})
		if _, _, body := r.browser(t).Get(t, r.srv.URL+oidcauth.StartURL("/admin/")); body != "user=alice@example.com-2 email=alice@example.com admin=false" {
			t.Fatalf("other subject: %q", body)
		}
		us, _ := r.st.ListUsers(context.Background())
		if len(us) != 2 {
			t.Fatalf("%d users, want 2", len(us))
		}
		es := r.audit(t)
		if len(es) != 3 || es[0].Action != "signin" || !es[0].OK || es[0].Actor != "user:alice@example.com" || es[0].Source != "127.0.0.1" {
			t.Fatalf("audit %+v", es[0])
		}
	})
}

// TestSignInRefusesOtherDomain: an email outside the allowed domain gets a
// page saying why; no user, identity or session is stored, the refusal is
// audited.
func TestSignInRefusesOtherDomain(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		r := newRig(t, dsn, nil)
		r.idp.Queue(oidctest.Person{Subject: "sub-mallory", Email: "mallory@example.org", EmailVerified: true, Groups: []string{"vpn-admins"}})
		b := r.browser(t)
		code, final, body := b.Get(t, r.srv.URL+oidcauth.StartURL("/admin/"))
		if code != http.StatusForbidden || final.Path != oidcauth.CallbackPath ||
			!strings.Contains(body, "mallory@example.org may not sign in to this network: the email domain example.org is not allowed.") {
			t.Fatalf("refusal: %d %s %q", code, final, body)
		}
		if code, _, _ := b.Get(t, r.srv.URL+"/admin/"); code != http.StatusUnauthorized {
			t.Fatalf("after refusal /admin/ answered %d", code)
		}
		us, _ := r.st.ListUsers(context.Background())
		ids, _ := r.st.ListIdentities(context.Background(), 0)
		if len(us) != 0 || len(ids) != 0 {
			t.Fatalf("stored %d users, %d identities", len(us), len(ids))
		}
		es := r.audit(t)
		if len(es) != 1 || es[0].OK || es[0].Actor != "oidc:mallory@example.org" || !strings.Contains(es[0].Detail, "example.org is not allowed") {
			t.Fatalf("audit %+v", es)
		}
	})
}

// TestUnverifiedEmailRefused: an allowed domain is worth nothing when the
// provider says the email is unverified.
func TestUnverifiedEmailRefused(t *testing.T) {
	r := newRig(t, "sqlite:"+t.TempDir()+"/w.db", nil)
	r.idp.Queue(oidctest.Person{Subject: "s", Email: "eve@example.com", EmailVerified: false})
	code, _, body := r.browser(t).Get(t, r.srv.URL+oidcauth.StartURL("/admin/"))
	if code != http.StatusForbidden || !strings.Contains(body, "not verified") {
		t.Fatalf("%d %q", code, body)
	}
}

// TestReplayedOrForgedCallbackRefused: a callback used once is refused the
// second time; a forged state or code is refused; none of them signs in.
func TestReplayedOrForgedCallbackRefused(t *testing.T) {
	r := newRig(t, "sqlite:"+t.TempDir()+"/w.db", nil)
	person := oidctest.Person{Subject: "sub-bob", Email: "bob@example.com", EmailVerified: true}

	// Replay: the same browser repeats a callback that already worked.
	r.idp.Queue(person)
	b := r.browser(t)
	cb := b.CallbackURL(t, r.srv.URL+oidcauth.StartURL("/admin/"), oidcauth.CallbackPath)
	if code, _, body := b.Get(t, cb.String()); code != 200 || !strings.HasPrefix(body, "user=bob@example.com") {
		t.Fatalf("first callback: %d %q", code, body)
	}
	if code, _, body := b.Get(t, cb.String()); code != http.StatusBadRequest || !strings.Contains(body, "already used or has expired") {
		t.Fatalf("replayed callback: %d %q", code, body)
	}
	// Replay into another browser's fresh login: the state does not match.
	r.idp.Queue(person)
	b2 := r.browser(t)
	b2.CallbackURL(t, r.srv.URL+oidcauth.StartURL("/admin/"), oidcauth.CallbackPath) // a login of its own, left pending
	if code, _, body := b2.Get(t, cb.String()); code != http.StatusBadRequest || !strings.Contains(body, "state does not match") {
		t.Fatalf("stolen callback: %d %q", code, body)
	}
	if code, _, _ := b2.Get(t, r.srv.URL+"/admin/"); code != http.StatusUnauthorized {
		t.Fatalf("stolen callback signed in (%d)", code)
	}
	// Forged code with the right state.
	r.idp.Queue(person)
	b3 := r.browser(t)
	cb3 := b3.CallbackURL(t, r.srv.URL+oidcauth.StartURL("/admin/"), oidcauth.CallbackPath)
	q := cb3.Query()
	q.Set("code", "forged-code")
	cb3.RawQuery = q.Encode()
	if code, _, body := b3.Get(t, cb3.String()); code != http.StatusBadRequest || !strings.Contains(body, "did not accept the sign-in code") {
		t.Fatalf("forged code: %d %q", code, body)
	}
	// A callback without any login cookie (e.g. a link sent to someone).
	if code, _, body := r.browser(t).Get(t, r.srv.URL+oidcauth.CallbackPath+"?code=x&state=y"); code != http.StatusBadRequest || !strings.Contains(body, "already used") {
		t.Fatalf("bare callback: %d %q", code, body)
	}
	ok, refused := 0, 0
	for _, e := range r.audit(t) {
		if e.OK {
			ok++
		} else {
			refused++
		}
	}
	if ok != 1 || refused != 4 {
		t.Fatalf("audit: %d ok, %d refused; want 1, 4", ok, refused)
	}
}

// TestUsersMustPreExist: without CreateUsers an unknown person is refused;
// once an admin creates the user by email, the identity is linked to it.
func TestUsersMustPreExist(t *testing.T) {
	r := newRig(t, "sqlite:"+t.TempDir()+"/w.db", func(c *oidcauth.Config) { c.CreateUsers = false })
	carol := oidctest.Person{Subject: "sub-carol", Email: "carol@example.com", EmailVerified: true}
	r.idp.Queue(carol)
	if code, _, body := r.browser(t).Get(t, r.srv.URL+oidcauth.StartURL("/admin/")); code != http.StatusForbidden || !strings.Contains(body, "has no user on this network") {
		t.Fatalf("unknown user: %d %q", code, body)
	}
	if _, err := r.st.CreateUser(context.Background(), "carol@example.com"); err != nil {
		t.Fatal(err)
	}
	r.idp.Queue(carol)
	if _, _, body := r.browser(t).Get(t, r.srv.URL+oidcauth.StartURL("/admin/")); body != "user=carol@example.com email=carol@example.com admin=false" {
		t.Fatalf("pre-created user: %q", body)
	}
}

// TestStartRefusesOpenRedirect: next must be a local path.
func TestStartRefusesOpenRedirect(t *testing.T) {
	for _, next := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example"} {
		if got := oidcauth.StartURL(next); got != oidcauth.StartPath+"?next="+url.QueryEscape("/") {
			t.Errorf("StartURL(%q) = %q", next, got)
		}
	}
	r := newRig(t, "sqlite:"+t.TempDir()+"/w.db", nil)
	r.idp.Queue(oidctest.Person{Subject: "s", Email: "dan@example.com", EmailVerified: true})
	_, final, _ := r.browser(t).Get(t, r.srv.URL+oidcauth.StartPath+"?next="+url.QueryEscape("//evil.example/"))
	if final.Host != strings.TrimPrefix(r.srv.URL, "https://") || final.Path != "/" {
		t.Fatalf("ended at %s", final)
	}
}

// TestLogout: sign-out from the server's own page ends the session; one
// from another origin is refused and the session stays.
func TestLogout(t *testing.T) {
	r := newRig(t, "sqlite:"+t.TempDir()+"/w.db", nil)
	r.idp.Queue(oidctest.Person{Subject: "s", Email: "kim@example.com", EmailVerified: true})
	b := r.browser(t)
	b.Get(t, r.srv.URL+oidcauth.StartURL("/admin/"))
	post := func(origin string) int {
		req, _ := http.NewRequest("POST", r.srv.URL+oidcauth.LogoutPath, nil)
		req.Header.Set("Origin", origin)
		resp, err := b.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("https://evil.example"); code != http.StatusForbidden {
		t.Fatalf("cross-origin logout: %d", code)
	}
	if code, _, _ := b.Get(t, r.srv.URL+"/admin/"); code != 200 {
		t.Fatalf("session gone after a refused logout (%d)", code)
	}
	post(r.srv.URL)
	if code, _, _ := b.Get(t, r.srv.URL+"/admin/"); code != http.StatusUnauthorized {
		t.Fatalf("session alive after logout (%d)", code)
	}
}
