package admin_test

import (
	"context"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
)

func TestPeerRelaysResource(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		n := e.addNode("alice", "relay")
		e.addNode("alice", "laptop")
		var list []admin.NodeRelay
		e.must(200, &list, "GET", "/api/v1/peer-relays", "")
		if len(list) != 0 {
			t.Fatalf("nodes offering nothing listed: %+v", list)
		}
		if err := e.st.SetRelayPort(context.Background(), n.ID, 3480); err != nil {
			t.Fatal(err)
		}
		e.must(200, &list, "GET", "/api/v1/peer-relays", "")
		if len(list) != 1 || list[0].Name != "relay" || list[0].Port != 3480 || list[0].Approved || list[0].Serving {
			t.Fatalf("list %+v", list)
		}
		e.fails(404, `node "nope" not found`, "POST", "/api/v1/nodes/nope/relay/approve", "")
		n0 := e.notified.Load()
		var nr admin.NodeRelay
		e.must(200, &nr, "POST", "/api/v1/nodes/relay/relay/approve", "")
		if !nr.Approved || !nr.Serving || nr.Port != 3480 {
			t.Fatalf("approve: %+v", nr)
		}
		n0 = e.notifiedSince(n0, true, "approve relay")
		e.must(200, &nr, "POST", "/api/v1/nodes/relay/relay/unapprove", "")
		if nr.Approved || nr.Serving {
			t.Fatalf("unapprove: %+v", nr)
		}
		e.notifiedSince(n0, true, "unapprove relay")
	})
}
