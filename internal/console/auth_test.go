package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/console"
)

// testIdP is an Authenticator standing in for OIDC, with a browser session
// of its own: GET /idp/signin?as=WHO&next=PATH sets its cookie and sends
// the browser back, as the OIDC callback does.
type testIdP struct {
	admins map[string]bool // who may sign in, and whether they are admins
}

func (p *testIdP) ID() string    { return "test" }
func (p *testIdP) Label() string { return "Sign in with the test IdP" }
func (p *testIdP) SignInURL(next string) string {
	return "/idp/signin?next=" + url.QueryEscape(next)
}

func (p *testIdP) Authenticate(r *http.Request) (string, bool, bool) {
	ck, err := r.Cookie("idp")
	if err != nil {
		return "", false, false
	}
	admin, ok := p.admins[ck.Value]
	return ck.Value, admin, ok
}

func (p *testIdP) SignOut(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: "idp", Path: "/", MaxAge: -1})
}

func (p *testIdP) serve(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: "idp", Value: r.URL.Query().Get("as"), Path: "/", HttpOnly: true})
	http.Redirect(w, r, r.URL.Query().Get("next"), http.StatusFound)
}

// An Authenticator's session gives an admin a console session (with its
// own CSRF token), refuses a person who is not an admin with the reason,
// ends the console session when the method's own session ends, and
// signing out of the console signs out of the method too.
func TestAuthenticatorSignIn(t *testing.T) {
	idp := &testIdP{admins: map[string]bool{"ada@example.com": true, "bob@example.com": false}}
	e := newEnv(t, console.Options{Authenticators: []console.Authenticator{idp}})
	e.mux.HandleFunc("/idp/signin", idp.serve)
	b := e.browser()
	b.c.CheckRedirect = nil // follow, as a browser does
	_, body := b.do("GET", "/admin/signin", nil, nil)
	if !strings.Contains(body, `href="/idp/signin?next=%2Fadmin%2Fnodes"`) || !strings.Contains(body, idp.Label()) {
		t.Fatalf("sign-in page without the method:\n%s", body)
	}
	resp, body := b.do("GET", "/idp/signin?as=bob@example.com&next=/admin/users", nil, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "bob@example.com is signed in but is not an administrator") {
		t.Fatalf("non-admin: %d\n%s", resp.StatusCode, body)
	}
	resp, body = b.do("GET", "/idp/signin?as=mallory@example.com&next=/admin/users", nil, nil)
	if resp.Request.URL.Path != "/admin/signin" || strings.Contains(body, "mallory") {
		t.Fatalf("unknown person: at %s\n%s", resp.Request.URL, body)
	}
	resp, body = b.do("GET", "/idp/signin?as=ada@example.com&next=/admin/users", nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/admin/users" || !strings.Contains(body, "ada@example.com") {
		t.Fatalf("admin: %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	tok := b.csrf("/admin/users")
	resp, _ = b.do("POST", "/admin/users", url.Values{"csrf": {tok}, "name": {"carol"}}, b.sameOrigin())
	if _, err := e.st.GetUserByName(t.Context(), "carol"); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("create a user: %d %v", resp.StatusCode, err)
	}
	// The method's session now names someone else: the console session
	// ends with it.
	idp.admins["eve@example.com"] = true
	b.do("GET", "/idp/signin?as=eve@example.com&next=/idp/none", nil, nil)
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if resp, _ := b.do("POST", "/admin/users", url.Values{"csrf": {tok}, "name": {"dave"}}, b.sameOrigin()); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("post after the method's session changed: %d", resp.StatusCode)
	}
	// Signing out of the console ends the method's session too.
	b.c.CheckRedirect = nil
	_, body = b.do("GET", "/admin/users", nil, nil)
	if !strings.Contains(body, "eve@example.com") {
		t.Fatalf("not signed in as eve:\n%s", body)
	}
	resp, _ = b.do("POST", "/admin/signout", url.Values{"csrf": {b.csrf("/admin/users")}}, b.sameOrigin())
	if resp.Request.URL.Path != "/admin/signin" {
		t.Fatalf("after sign-out at %s", resp.Request.URL)
	}
	if _, body := b.do("GET", "/admin/users", nil, nil); strings.Contains(body, "eve@example.com") {
		t.Fatal("still signed in after signing out")
	}
}
