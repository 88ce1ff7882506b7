package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/console"
)

// Signing in with an admin API key sets an HttpOnly, SameSite=Strict
// session cookie (Secure when the console is told the server is on TLS)
// holding a random token, not the key; a wrong key gets no session.
func TestSignInWithAPIKey(t *testing.T) {
	for _, secure := range []bool{false, true} {
		e := newEnv(t, console.Options{Secure: secure})
		b := e.browser()
		if resp, _ := b.do("GET", "/admin/nodes", nil, nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/signin" {
			t.Fatalf("signed out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		resp := b.signIn("wapi_wrong_key")
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Fatalf("wrong key: %d, cookies %v", resp.StatusCode, resp.Cookies())
		}
		resp = b.signIn(e.apiKey)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in: %d", resp.StatusCode)
		}
		cs := resp.Cookies()
		if len(cs) != 1 || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode || cs[0].Secure != secure ||
			cs[0].Path != "/admin/" || strings.Contains(cs[0].Value, e.apiKey) || len(cs[0].Value) < 40 {
			t.Fatalf("cookie: %+v", cs)
		}
		// A jar keeps a Secure cookie from plain http: send it by hand.
		resp, body := b.do("GET", "/admin/nodes", nil, map[string]string{"Cookie": cs[0].Name + "=" + cs[0].Value})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<span>API key ") || !strings.Contains(body, "Sign out") {
			t.Fatalf("nodes page: %d\n%s", resp.StatusCode, body)
		}
	}
}

// Every page has the strict policy: scripts only from the console's own
// file, nothing inline, no framing, no caching.
func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, console.Options{})
	b := e.browser()
	b.signIn(e.apiKey)
	for _, p := range []string{"/admin/signin", "/admin/nodes", "/admin/users", "/admin/keys", "/admin/dns", "/admin/policy"} {
		resp, body := b.do("GET", p, nil, nil)
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", p, resp.Header)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, " onclick=") {
			t.Errorf("%s: inline script or style", p)
		}
	}
}

// A state-changing request is refused without the session's CSRF token,
// with a wrong one, and from another origin even with the right token;
// the node survives all three and is deleted by the console's own form.
func TestCSRF(t *testing.T) {
	e := newEnv(t, console.Options{})
	n := e.join("victim")
	b := e.browser()
	b.signIn(e.apiKey)
	tok := b.csrf("/admin/nodes/" + itoa(n.id))
	path := "/admin/nodes/" + itoa(n.id) + "/delete"
	for _, c := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no token", url.Values{}, b.sameOrigin()},
		{"wrong token", url.Values{"csrf": {"forged"}}, b.sameOrigin()},
		{"other origin", url.Values{"csrf": {tok}}, map[string]string{"Origin": "http://evil.example"}},
		{"cross-site fetch", url.Values{"csrf": {tok}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site other port", url.Values{"csrf": {tok}}, map[string]string{"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}},
	} {
		resp, body := b.do("POST", path, c.form, c.hdr)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d %s", c.name, resp.StatusCode, body)
		}
		if _, err := e.st.GetNode(context.Background(), n.id); err != nil {
			t.Fatalf("%s: node gone: %v", c.name, err)
		}
	}
	resp, _ := b.do("POST", path, url.Values{"csrf": {tok}}, b.sameOrigin())
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("console's own form: %d", resp.StatusCode)
	}
	if _, err := e.st.GetNode(context.Background(), n.id); err == nil {
		t.Fatal("node not deleted")
	}
}

// A session ends when the API key it was signed in with is deleted, and
// after its idle timeout.
func TestSessionEnds(t *testing.T) {
	clk := clock.NewFake(time.Now())
	e := newEnv(t, console.Options{IdleTimeout: time.Hour, Clock: clk})
	b := e.browser()
	b.signIn(e.apiKey)
	if resp, _ := b.do("GET", "/admin/users", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed in: %d", resp.StatusCode)
	}
	clk.Advance(59 * time.Minute)
	if resp, _ := b.do("GET", "/admin/users", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("used within the idle timeout: %d", resp.StatusCode)
	}
	clk.Advance(time.Hour)
	if resp, _ := b.do("GET", "/admin/users", nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("idle session still valid: %d", resp.StatusCode)
	}
	e2 := newEnv(t, console.Options{})
	b2 := e2.browser()
	b2.signIn(e2.apiKey)
	ks, err := e2.st.ListAPIKeys(context.Background())
	if err != nil || len(ks) != 1 {
		t.Fatal(ks, err)
	}
	if err := e2.st.DeleteAPIKey(context.Background(), ks[0].ID); err != nil {
		t.Fatal(err)
	}
	if resp, _ := b2.do("GET", "/admin/users", nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session of a deleted key still valid: %d", resp.StatusCode)
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// Each action reaches the admin API with who made it (for its audit log).
func TestActionsNameTheActor(t *testing.T) {
	e := newEnv(t, console.Options{})
	b := e.browser()
	b.signIn(e.apiKey)
	ks, err := e.st.ListAPIKeys(context.Background())
	if err != nil || len(ks) != 1 {
		t.Fatal(ks, err)
	}
	b.do("POST", "/admin/users", url.Values{"csrf": {b.csrf("/admin/users")}, "name": {"carol"}}, b.sameOrigin())
	want := "POST /api/v1/users apikey:wapi_" + ks[0].Prefix
	if got := e.calls.seen(); len(got) != 1 || got[0] != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
}

// The policy editor without a browser: a refused policy comes back with
// the text kept, the problem at its line and column, the line marked and
// the cursor's place for the script; nothing is stored. A check of a good
// policy stores nothing either; a save does.
func TestPolicyEditor(t *testing.T) {
	e := newEnv(t, console.Options{})
	b := e.browser()
	b.signIn(e.apiKey)
	tok := b.csrf("/admin/policy")
	bad := "{\n  // comment\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:nobody\"], \"dst\": [\"*:*\"]},\n  ],\n}\n"
	resp, body := b.do("POST", "/admin/policy", url.Values{"csrf": {tok}, "op": {"save"}, "policy": {strings.ReplaceAll(bad, "\n", "\r\n")}}, b.sameOrigin())
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "<b>line 4, column") ||
		!strings.Contains(body, `class="mark" data-line="4"`) || !strings.Contains(body, `data-line="4" data-column=`) ||
		!strings.Contains(body, "group:nobody") || !strings.Contains(body, "  // comment") {
		t.Fatalf("refused policy: %d\n%s", resp.StatusCode, body)
	}
	good := "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}], \"tests\": [{\"src\": \"alice@\", \"accept\": [\"10.0.0.1:22\"]}]}"
	resp, body = b.do("POST", "/admin/policy", url.Values{"csrf": {tok}, "op": {"check"}, "policy": {good}}, b.sameOrigin())
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "its 1 tests pass (not saved yet)") {
		t.Fatalf("check: %d\n%s", resp.StatusCode, body)
	}
	if p, err := e.st.Policy(context.Background()); err != nil || p.ID != 0 {
		t.Fatalf("stored after a refusal and a check: %+v %v", p, err)
	}
	resp, _ = b.do("POST", "/admin/policy", url.Values{"csrf": {tok}, "op": {"save"}, "policy": {good}}, b.sameOrigin())
	if p, err := e.st.Policy(context.Background()); resp.StatusCode != http.StatusSeeOther || err != nil || p.Text != good {
		t.Fatalf("save: %d %+v %v", resp.StatusCode, p, err)
	}
}
