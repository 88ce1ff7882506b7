package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// TestRelayKeyScope: a relay key (scope "relay") lists the node keys a
// relay vouches with, and nothing else: it cannot create users, auth keys
// or API keys, read the full node list or expire a node.
func TestRelayKeyScope(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(http.StatusCreated, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		n := e.addNode("alice", "laptop")
		var rk admin.APIKey
		e.must(http.StatusCreated, &rk, "POST", "/api/v1/apikeys", `{"scope":"relay"}`)
		if rk.Scope != "relay" || rk.Key == "" {
			t.Fatalf("created %+v", rk)
		}
		code, body := e.callKey(rk.Key, "GET", "/api/v1/relay/nodes", "")
		var rn []admin.RelayNode
		if code != http.StatusOK || json.Unmarshal([]byte(body), &rn) != nil || len(rn) != 1 || rn[0].NodeKey != n.NodeKey.String() || rn[0].Expired {
			t.Fatalf("relay key lists nodes: %d %s", code, body)
		}
		for _, c := range []struct{ method, path, body string }{
			{"POST", "/api/v1/users", `{"name":"mallory"}`},
			{"POST", "/api/v1/authkeys", `{"user":"alice","reusable":true}`},
			{"POST", "/api/v1/apikeys", `{}`},
			{"GET", "/api/v1/nodes", ""},
			{"GET", "/api/v1/authkeys", ""},
			{"POST", "/api/v1/nodes/laptop/expire", ""},
			{"DELETE", "/api/v1/nodes/laptop", ""},
		} {
			code, body := e.callKey(rk.Key, c.method, c.path, c.body)
			checkErr(t, code, body, http.StatusForbidden, "relay key")
		}
		if us, _ := e.st.ListUsers(context.Background()); len(us) != 1 {
			t.Fatalf("%d users after the relay key's attempts", len(us))
		}
		if got, _ := e.st.GetNode(context.Background(), n.ID); got == nil || !got.Expiry.IsZero() {
			t.Fatalf("node after the relay key's attempts: %+v", got)
		}
		// A full admin key lists the relay view too; an expired node is
		// marked.
		if err := e.st.SetNodeExpiry(context.Background(), n.ID, time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		e.must(http.StatusOK, &rn, "GET", "/api/v1/relay/nodes", "")
		if len(rn) != 1 || !rn[0].Expired {
			t.Fatalf("relay view of an expired node: %+v", rn)
		}
		var keys []admin.APIKey
		e.must(http.StatusOK, &keys, "GET", "/api/v1/apikeys", "")
		if len(keys) != 2 || keys[0].Scope != "admin" || keys[1].Scope != "relay" {
			t.Fatalf("listed %+v", keys)
		}
		e.fails(http.StatusBadRequest, "scope", "POST", "/api/v1/apikeys", `{"scope":"root"}`)
	})
}
