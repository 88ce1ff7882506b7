package admin_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
)

const testPolicy = `{
	// eng reaches the databases on 5432
	"groups": {"group:eng": ["alice@"]},
	"tagOwners": {"tag:db": ["group:eng"]},
	"acls": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"]}],
	"tests": [{"src": "alice@", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]}],
}`

func TestPolicyResource(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		var p admin.Policy
		e.must(200, &p, "GET", "/api/v1/policy", "")
		if p.Version != 0 || p.Policy != "" || p.Updated != nil {
			t.Fatalf("fresh policy %+v", p)
		}
		// Tags need a policy declaring them.
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"bob"}`)
		e.fails(400, "no policy is set", "POST", "/api/v1/authkeys", `{"user":"alice","tags":["tag:db"]}`)

		var c admin.PolicyCheck
		e.must(200, &c, "POST", "/api/v1/policy/check", testPolicy)
		if !c.OK || c.Tests != 1 {
			t.Fatalf("check %+v", c)
		}
		e.must(200, &p, "GET", "/api/v1/policy", "") // checking stores nothing
		if p.Version != 0 {
			t.Fatal("check stored the policy")
		}
		n0 := e.notified.Load()
		e.must(200, &p, "PUT", "/api/v1/policy", testPolicy)
		if p.Version == 0 || p.Policy != testPolicy || p.Updated == nil {
			t.Fatalf("set %+v", p)
		}
		n0 = e.notifiedSince(n0, true, "set policy")

		// A failing test blocks the upload and names each failing case.
		bad := strings.Replace(testPolicy, `"deny": ["tag:db:22"]`, `"deny": ["tag:db:5432"]`, 1)
		for _, path := range []string{"/api/v1/policy", "/api/v1/policy/check"} {
			method := "PUT"
			if strings.HasSuffix(path, "check") {
				method = "POST"
			}
			code, body := e.call(method, path, bad)
			var pp admin.PolicyProblem
			if err := json.Unmarshal([]byte(body), &pp); err != nil || code != 400 ||
				!strings.Contains(pp.Error, "policy tests failed") || len(pp.Problems) != 1 ||
				pp.Problems[0] != "line 6, column 66: test failed: tcp from alice@ to tag:db:5432 is accepted, the test expects it denied" {
				t.Fatalf("%s %s: %d %s", method, path, code, body)
			}
		}
		code, body := e.call("PUT", "/api/v1/policy", "{\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"nobody\"], \"dst\": [\"*:*\"]}],\n}")
		if code != 400 || !strings.Contains(body, `line 2, column 41: unknown alias \"nobody\"`) {
			t.Fatalf("bad alias: %d %s", code, body)
		}
		e.fails(400, "empty policy", "PUT", "/api/v1/policy", "  ")
		e.notifiedSince(n0, false, "refused policies")
		e.must(200, &p, "GET", "/api/v1/policy", "")
		if p.Policy != testPolicy {
			t.Fatal("a refused policy replaced the accepted one")
		}

		// Tags on keys: alice (in group:eng) may use tag:db, bob may not.
		var k admin.AuthKey
		e.must(201, &k, "POST", "/api/v1/authkeys", `{"user":"alice","reusable":true,"tags":["tag:db"]}`)
		if !slices.Equal(k.Tags, []string{"tag:db"}) {
			t.Fatalf("key %+v", k)
		}
		e.fails(403, "user bob may not use tag tag:db", "POST", "/api/v1/authkeys", `{"user":"bob","tags":["tag:db"]}`)
		e.fails(400, "tag tag:web is not declared", "POST", "/api/v1/authkeys", `{"user":"alice","tags":["tag:web"]}`)
		e.fails(400, "invalid tag", "POST", "/api/v1/authkeys", `{"user":"alice","tags":["db"]}`)

		// Removing the policy: allow all again.
		e.must(200, &p, "DELETE", "/api/v1/policy", "")
		if p.Policy != "" || p.Version == 0 {
			t.Fatalf("after delete %+v", p)
		}
	})
}
