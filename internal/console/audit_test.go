package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/console"
)

// The audit page exists exactly when the admin API has an audit log: with
// it, an action taken in the console is listed with who took it; without
// it (a build without the audit log), there is no page and no link to one
// rather than a page that cannot show anything.
func TestAuditPage(t *testing.T) {
	e := newEnv(t, console.Options{})
	b := e.browser()
	b.signIn(e.apiKey)
	b.do("POST", "/admin/users", url.Values{"csrf": {b.csrf("/admin/users")}, "name": {"carol"}}, b.sameOrigin())
	code, _ := e.calls.Call(context.Background(), http.MethodGet, "/api/v1/audit?limit=1", nil)
	_, nav := b.do("GET", "/admin/users", nil, nil)
	if !strings.Contains(nav, `href="/admin/policy"`) {
		t.Fatalf("not signed in:\n%s", nav)
	}
	resp, body := b.do("GET", "/admin/audit?since=1h", nil, nil)
	if code != http.StatusOK {
		t.Logf("the admin API has no audit log (%d): checking the page is left out", code)
		if resp.StatusCode != http.StatusNotFound || strings.Contains(nav, `href="/admin/audit"`) {
			t.Fatalf("audit page without an audit log: %d, link %v", resp.StatusCode, strings.Contains(nav, "/admin/audit"))
		}
		return
	}
	ks, err := e.st.ListAPIKeys(context.Background())
	if err != nil || len(ks) != 1 {
		t.Fatal(ks, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(nav, `href="/admin/audit"`) ||
		!strings.Contains(body, "apikey:wapi_"+ks[0].Prefix) || !strings.Contains(body, "/api/v1/users") {
		t.Fatalf("audit page: %d\n%s", resp.StatusCode, body)
	}
}
