package admin_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// TestTagNode: PUT /nodes/{node}/tags gives a node tags its user may use
// (the policy's tagOwners, as for auth keys), notifies the server, and
// refuses undeclared tags, tags the user may not use, bad tag syntax and
// an empty set (untagging goes through a new registration).
func TestTagNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"bob"}`)
		an := e.addNode("alice", "db1")
		bn := e.addNode("bob", "web1")
		path := func(id int64) string { return fmt.Sprintf("/api/v1/nodes/%d/tags", id) }
		e.fails(400, "no policy is set", "PUT", path(an.ID), `{"tags":["tag:db"]}`)
		e.must(200, nil, "PUT", "/api/v1/policy", testPolicy)

		n0 := e.notified.Load()
		var n admin.Node
		e.must(200, &n, "PUT", path(an.ID), `{"tags":["tag:db","tag:db"]}`)
		if !slices.Equal(n.Tags, []string{"tag:db"}) || n.Name != "db1" {
			t.Fatalf("tagged node %+v", n)
		}
		n0 = e.notifiedSince(n0, true, "tag a node")
		var got admin.Node
		e.must(200, &got, "GET", fmt.Sprintf("/api/v1/nodes/%d", an.ID), "")
		if !slices.Equal(got.Tags, []string{"tag:db"}) {
			t.Fatalf("stored node %+v", got)
		}

		e.fails(403, "user bob may not use tag tag:db", "PUT", path(bn.ID), `{"tags":["tag:db"]}`)
		e.fails(400, "tag tag:web is not declared", "PUT", path(an.ID), `{"tags":["tag:web"]}`)
		e.fails(400, "invalid tag", "PUT", path(an.ID), `{"tags":["db"]}`)
		e.fails(400, "no tags given", "PUT", path(an.ID), `{"tags":[]}`)
		e.fails(404, "not found", "PUT", "/api/v1/nodes/nosuch/tags", `{"tags":["tag:db"]}`)
		e.notifiedSince(n0, false, "refused tag changes")
		var bob admin.Node
		e.must(200, &bob, "GET", fmt.Sprintf("/api/v1/nodes/%d", bn.ID), "")
		if len(bob.Tags) != 0 {
			t.Fatalf("bob's node was tagged by a refused request: %+v", bob)
		}
	})
}
