package admin

import (
	"net/http"
	"time"
)

// RelayNodesPath lists what a standalone relay needs to vouch for nodes:
// each node's key and expiry, nothing else. A relay key (scope "relay")
// may use this endpoint and no other.
const (
	RelayNodesPath    = "/api/v1/relay/nodes"
	RelayNodesPattern = "GET " + RelayNodesPath
)

// RelayNode is one entry of RelayNodesPath.
type RelayNode struct {
	NodeKey string     `json:"node_key"`
	Expiry  *time.Time `json:"expiry,omitempty"`
	Expired bool       `json:"expired"`
}

func (a *api) relayNodes(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ns, err := a.st.ListNodes(r.Context(), 0)
	if err != nil {
		return 0, nil, err
	}
	now := time.Now()
	out := make([]RelayNode, 0, len(ns))
	for _, n := range ns {
		if n.NodeKey.IsZero() {
			continue // its stored key did not parse: it can connect nowhere
		}
		out = append(out, RelayNode{NodeKey: n.NodeKey.String(), Expiry: opt(n.Expiry), Expired: expired(n.Expiry, now)})
	}
	return http.StatusOK, out, nil
}
