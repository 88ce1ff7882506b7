package admin

import (
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/warrenmesh/warren/internal/routeprefix"
	"github.com/warrenmesh/warren/internal/store"
)

// NodeRoutes are one node's routes: what it advertises, what an admin
// approved, and what is enabled (both: peers are given these).
type NodeRoutes struct {
	ID         int64    `json:"id"`
	Name       string   `json:"name"`
	Online     bool     `json:"online"`
	Advertised []string `json:"advertised"`
	Approved   []string `json:"approved"`
	Enabled    []string `json:"enabled"`
}

// RoutesRequest names routes to approve or unapprove: CIDR prefixes, or
// "exit" for both default routes (0.0.0.0/0 and ::/0).
type RoutesRequest struct {
	Routes []string `json:"routes"`
}

// Subnet routes and exit nodes:
//
//	GET  /api/v1/routes                         every node's routes
//	POST /api/v1/nodes/{node}/routes/approve    RoutesRequest → NodeRoutes
//	POST /api/v1/nodes/{node}/routes/unapprove  RoutesRequest → NodeRoutes
//
// Approving a route the node does not advertise is allowed: it is a
// pre-approval that takes effect when the node advertises it.
func routesRoutes(a *api) []route {
	return []route{
		{"GET /api/v1/routes", a.listRoutes},
		{"POST /api/v1/nodes/{node}/routes/approve", a.approveRoutes(true)},
		{"POST /api/v1/nodes/{node}/routes/unapprove", a.approveRoutes(false)},
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func toNodeRoutes(n *store.Node) NodeRoutes {
	return NodeRoutes{ID: n.ID, Name: n.Name, Online: n.Online, Advertised: prefixStrings(n.AdvertisedRoutes),
		Approved: prefixStrings(n.ApprovedRoutes), Enabled: prefixStrings(n.EnabledRoutes())}
}

func (a *api) listRoutes(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ns, err := a.st.ListNodes(r.Context(), 0)
	if err != nil {
		return 0, nil, err
	}
	out := make([]NodeRoutes, 0, len(ns))
	for _, n := range ns {
		out = append(out, toNodeRoutes(n))
	}
	return http.StatusOK, out, nil
}

// ParseRoutes parses route arguments: CIDR prefixes without host bits,
// or "exit" for 0.0.0.0/0 and ::/0.
func ParseRoutes(args []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range args {
		for f := range strings.SplitSeq(s, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if f == "exit" {
				out = append(out, routeprefix.Exit()...)
				continue
			}
			p, err := routeprefix.Parse(f)
			if errors.Is(err, routeprefix.ErrNotCIDR) {
				return nil, errorf(http.StatusBadRequest, "route %q is not a CIDR prefix (like 192.168.1.0/24, or exit for 0.0.0.0/0 and ::/0)", f)
			}
			if err != nil {
				return nil, errorf(http.StatusBadRequest, "%v", err)
			}
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errorf(http.StatusBadRequest, "no routes given")
	}
	return out, nil
}

func (a *api) approveRoutes(approve bool) func(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var req RoutesRequest
		if err := decode(w, r, &req); err != nil {
			return 0, nil, err
		}
		ps, err := ParseRoutes(req.Routes)
		if err != nil {
			return 0, nil, err
		}
		n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
		if err != nil {
			return 0, nil, err
		}
		add, del := ps, []netip.Prefix(nil)
		if !approve {
			add, del = nil, ps
		}
		out, err := a.st.ApproveRoutes(r.Context(), n.ID, add, del)
		if err != nil {
			return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
		}
		a.notify()
		return http.StatusOK, toNodeRoutes(out), nil
	}
}
