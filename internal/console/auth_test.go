package console_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/console"
)

// testIdP is an Authenticator standing in for OIDC: Begin sends the
// browser straight to the callback with a code, Finish maps codes to
// identities (and refuses any other).
type testIdP struct{ who map[string]console.Identity }

func (p *testIdP) ID() string    { return "test" }
func (p *testIdP) Label() string { return "Sign in with the test IdP" }
func (p *testIdP) Begin(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/admin/auth/test/callback?code="+r.URL.Query().Get("as"), http.StatusFound)
}
func (p *testIdP) Finish(w http.ResponseWriter, r *http.Request) (console.Identity, error) {
	id, ok := p.who[r.URL.Query().Get("code")]
	if !ok {
		return console.Identity{}, errors.New("unknown code")
	}
	return id, nil
}

// An Authenticator's sign-in gives an admin a session, and refuses a
// person who is not an admin or whose answer the authenticator rejects;
// the sign-in page offers it.
func TestAuthenticatorSignIn(t *testing.T) {
	idp := &testIdP{who: map[string]console.Identity{
		"c-admin": {User: "ada@example.com", Admin: true},
		"c-user":  {User: "bob@example.com"},
	}}
	e := newEnv(t, console.Options{Authenticators: []console.Authenticator{idp}})
	b := e.browser()
	if _, body := b.do("GET", "/admin/signin", nil, nil); !strings.Contains(body, `href="/admin/auth/test/start"`) || !strings.Contains(body, idp.Label()) {
		t.Fatalf("sign-in page without the method:\n%s", body)
	}
	for _, c := range []struct {
		code string
		want int
	}{{"c-user", http.StatusForbidden}, {"forged", http.StatusForbidden}, {"c-admin", http.StatusSeeOther}} {
		resp, _ := b.do("GET", "/admin/auth/test/start?as="+c.code, nil, nil)
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("start: %d", resp.StatusCode)
		}
		resp, body := b.do("GET", resp.Header.Get("Location"), nil, nil)
		if resp.StatusCode != c.want {
			t.Fatalf("%s: %d\n%s", c.code, resp.StatusCode, body)
		}
		if c.code == "c-user" && !strings.Contains(body, "bob@example.com is not an administrator") {
			t.Fatalf("refusal page: %s", body)
		}
		_, page := b.do("GET", "/admin/users", nil, nil)
		if signedIn := strings.Contains(page, "ada@example.com"); signedIn != (c.want == http.StatusSeeOther) {
			t.Fatalf("%s: signed in %v", c.code, signedIn)
		}
	}
}
