package console_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/console"
)

// The node page's forms: rename, tag (the policy's tagOwners decide, as
// in the API), unapprove a route, expire; a refusal comes back as the
// API's message.
func TestNodeActions(t *testing.T) {
	e := newEnv(t, console.Options{})
	n := e.join("box", "10.9.0.0/24")
	ctx := context.Background()
	if _, err := e.st.SetPolicy(ctx, `{"tagOwners": {"tag:srv": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn(e.apiKey)
	page := "/admin/nodes/" + itoa(n.id)
	tok := b.csrf(page)
	post := func(action string, form url.Values) string {
		t.Helper()
		form.Set("csrf", tok)
		resp, _ := b.do("POST", page+"/"+action, form, b.sameOrigin())
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s: %d", action, resp.StatusCode)
		}
		_, body := b.do("GET", resp.Header.Get("Location"), nil, nil)
		return body
	}
	if body := post("rename", url.Values{"name": {"Not A Label"}}); !strings.Contains(body, "is not a DNS label") {
		t.Fatalf("bad name: no error shown\n%s", body)
	}
	if body := post("rename", url.Values{"name": {"fileserver"}}); !strings.Contains(body, "Renamed to fileserver.") {
		t.Fatalf("rename:\n%s", body)
	}
	if body := post("tags", url.Values{"tags": {"tag:nope"}}); !strings.Contains(body, "not declared in the policy") {
		t.Fatalf("undeclared tag: no error shown\n%s", body)
	}
	post("tags", url.Values{"tags": {"tag:srv"}})
	post("routes", url.Values{"route": {"10.9.0.0/24"}, "op": {"approve"}})
	post("routes", url.Values{"route": {"10.9.0.0/24"}, "op": {"unapprove"}})
	post("expire", url.Values{})
	got, err := e.st.GetNode(ctx, n.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "fileserver" || !slices.Equal(got.Tags, []string{"tag:srv"}) || len(got.ApprovedRoutes) != 0 || got.Expiry.IsZero() {
		t.Fatalf("node after the actions: %+v", got)
	}
}
