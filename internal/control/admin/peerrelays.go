package admin

import (
	"net/http"
	"strconv"

	"github.com/warrenmesh/warren/internal/store"
)

// NodeRelay is one node's peer relay state: the UDP port it offers (0:
// none), whether an admin approved it, and whether it serves (both).
type NodeRelay struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Online   bool   `json:"online"`
	Port     uint16 `json:"port"`
	Approved bool   `json:"approved"`
	Serving  bool   `json:"serving"`
}

// Peer relays (docs/RELAY.md, "Peer relays"; who may use them:
// docs/POLICY.md):
//
//	GET  /api/v1/peer-relays                        every node's peer relay state
//	POST /api/v1/nodes/{node}/relay/approve         → NodeRelay
//	POST /api/v1/nodes/{node}/relay/unapprove       → NodeRelay
//
// Approving a node that offers no port yet is a pre-approval.
func peerRelayRoutes(a *api) []route {
	return []route{
		{"GET /api/v1/peer-relays", a.listPeerRelays},
		{"POST /api/v1/nodes/{node}/relay/approve", a.approveRelay(true)},
		{"POST /api/v1/nodes/{node}/relay/unapprove", a.approveRelay(false)},
	}
}

func toNodeRelay(n *store.Node) NodeRelay {
	return NodeRelay{ID: n.ID, Name: n.Name, Online: n.Online, Port: n.RelayPort, Approved: n.RelayApproved, Serving: n.IsPeerRelay()}
}

func (a *api) listPeerRelays(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ns, err := a.st.ListNodes(r.Context(), 0)
	if err != nil {
		return 0, nil, err
	}
	out := []NodeRelay{}
	for _, n := range ns {
		if n.RelayPort != 0 || n.RelayApproved {
			out = append(out, toNodeRelay(n))
		}
	}
	return http.StatusOK, out, nil
}

func (a *api) approveRelay(approve bool) func(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
		if err != nil {
			return 0, nil, err
		}
		out, err := a.st.ApproveRelay(r.Context(), n.ID, approve)
		if err != nil {
			return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
		}
		a.notify()
		return http.StatusOK, toNodeRelay(out), nil
	}
}
