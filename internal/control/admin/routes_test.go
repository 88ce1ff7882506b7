package admin_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/warrenmesh/warren/internal/control/admin"
)

func TestRoutesResource(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		e.must(201, nil, "POST", "/api/v1/users", `{"name":"alice"}`)
		n := e.addNode("alice", "router")
		if err := e.st.SetAdvertisedRoutes(context.Background(), n.ID, []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}); err != nil {
			t.Fatal(err)
		}
		var list []admin.NodeRoutes
		e.must(200, &list, "GET", "/api/v1/routes", "")
		if len(list) != 1 || list[0].Name != "router" || !slices.Equal(list[0].Advertised, []string{"198.19.1.0/24"}) ||
			len(list[0].Approved) != 0 || len(list[0].Enabled) != 0 {
			t.Fatalf("list %+v", list)
		}
		e.fails(400, `route "198.19.1.0" is not a CIDR prefix`, "POST", "/api/v1/nodes/router/routes/approve", `{"routes":["198.19.1.0"]}`)
		e.fails(400, "route 198.19.1.1/24 has host bits set (did you mean 198.19.1.0/24?)", "POST", "/api/v1/nodes/router/routes/approve", `{"routes":["198.19.1.1/24"]}`)
		e.fails(404, `node "nope" not found`, "POST", "/api/v1/nodes/nope/routes/approve", `{"routes":["198.19.1.0/24"]}`)
		e.fails(400, "no routes given", "POST", "/api/v1/nodes/router/routes/approve", `{"routes":[]}`)

		n0 := e.notified.Load()
		var nr admin.NodeRoutes
		e.must(200, &nr, "POST", "/api/v1/nodes/router/routes/approve", `{"routes":["198.19.1.0/24","exit"]}`)
		if !slices.Equal(nr.Approved, []string{"0.0.0.0/0", "198.19.1.0/24", "::/0"}) || !slices.Equal(nr.Enabled, []string{"198.19.1.0/24"}) {
			t.Fatalf("approve: %+v", nr)
		}
		n0 = e.notifiedSince(n0, true, "approve routes")
		e.must(200, &nr, "POST", "/api/v1/nodes/router/routes/unapprove", `{"routes":["198.19.1.0/24"]}`)
		if !slices.Equal(nr.Approved, []string{"0.0.0.0/0", "::/0"}) || len(nr.Enabled) != 0 {
			t.Fatalf("unapprove: %+v", nr)
		}
		e.notifiedSince(n0, true, "unapprove routes")
	})
}
