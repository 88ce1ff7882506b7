package localapi

import (
	"context"
	"net/http"
	"net/netip"
	"time"
)

// Subnet routes and exit nodes, mounted by Handler when the Backend is a
// RoutesBackend:
//
//	GET  /localapi/v1/routes             RouteStatus
//	POST /localapi/v1/routes RoutePrefs → RouteStatus
//
// `warren up` sends the route flags the user gave with POST before (and,
// for the exit node, after) its UpRequest; `warren status` adds the
// RouteStatus to what it prints.

// RoutePrefs changes the node's route preferences; nil fields are left
// as they are. They are kept across restarts.
type RoutePrefs struct {
	// AdvertiseRoutes are subnets this node offers to route for peers.
	AdvertiseRoutes *[]netip.Prefix `json:"advertiseRoutes,omitempty"`
	// AdvertiseExitNode offers 0.0.0.0/0 and ::/0 (an exit node).
	AdvertiseExitNode *bool `json:"advertiseExitNode,omitempty"`
	// AcceptRoutes installs the subnet routes peers offer.
	AcceptRoutes *bool `json:"acceptRoutes,omitempty"`
	// ExitNode routes all traffic through a peer: its name, DNS name or
	// tunnel address, "auto" (the best online exit node, with failover),
	// or "" for none.
	ExitNode *string `json:"exitNode,omitempty"`
	// ExitNodeAllowLAN keeps the local networks reachable directly while
	// an exit node is used.
	ExitNodeAllowLAN *bool `json:"exitNodeAllowLAN,omitempty"`
	// RelayServerPort offers to serve as a peer relay on this UDP port
	// (0: stop); an admin approves the node as one.
	RelayServerPort *uint16 `json:"relayServerPort,omitempty"`
}

// RouteStatus is the node's route preferences and what they resolve to.
type RouteStatus struct {
	AdvertiseRoutes   []netip.Prefix `json:"advertiseRoutes"`
	AdvertiseExitNode bool           `json:"advertiseExitNode"`
	AcceptRoutes      bool           `json:"acceptRoutes"`
	ExitNode          string         `json:"exitNode,omitempty"` // as asked: name, address or "auto"
	ExitNodeAllowLAN  bool           `json:"exitNodeAllowLAN"`
	// Routes are this node's routes as approved and advertised: what its
	// peers may send it to forward (with IP forwarding and masquerading on).
	Routes []netip.Prefix `json:"routes"`
	// CurrentExitNode is the peer traffic leaves through now ("" none),
	// with its tunnel address.
	CurrentExitNode   string     `json:"currentExitNode,omitempty"`
	CurrentExitNodeIP netip.Addr `json:"currentExitNodeIP,omitzero"`
	// ExitSince is when the current exit node was chosen.
	ExitSince time.Time `json:"exitSince,omitzero"`
	// ExitBlocked, when set, says why no exit node is usable although
	// one is asked for: internet traffic (and DNS that would go to the
	// exit node) is blocked until another is picked or it is cleared.
	ExitBlocked string `json:"exitBlocked,omitempty"`
	// Peers lists the peers that offer routes.
	Peers []PeerRoutes `json:"peers"`
}

// PeerRoutes is one peer's offered routes.
type PeerRoutes struct {
	Name     string         `json:"name"`
	Addr     netip.Addr     `json:"addr,omitzero"`
	Online   bool           `json:"online"`
	Routes   []netip.Prefix `json:"routes"`
	ExitNode bool           `json:"exitNode"` // offers 0.0.0.0/0 and ::/0
	Accepted []netip.Prefix `json:"accepted,omitempty"`
	InUse    bool           `json:"inUse,omitempty"` // the current exit node
}

// RoutesBackend is implemented by a Backend that handles routes.
type RoutesBackend interface {
	RouteStatus() *RouteStatus
	SetRoutePrefs(ctx context.Context, p RoutePrefs) (*RouteStatus, error)
}

// routesHandlers adds the routes endpoints to Handler's mux.
func routesHandlers(mux *http.ServeMux, rb RoutesBackend) {
	mux.HandleFunc("GET /localapi/v1/routes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, rb.RouteStatus())
	})
	mux.HandleFunc("POST /localapi/v1/routes", func(w http.ResponseWriter, r *http.Request) {
		var p RoutePrefs
		if !readJSON(w, r, &p) {
			return
		}
		st, err := rb.SetRoutePrefs(r.Context(), p)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
}

// Routes returns the node's route preferences and state.
func (c *Client) Routes(ctx context.Context) (*RouteStatus, error) {
	var st RouteStatus
	if err := c.call(ctx, "GET", "/localapi/v1/routes", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SetRoutePrefs changes the node's route preferences.
func (c *Client) SetRoutePrefs(ctx context.Context, p RoutePrefs) (*RouteStatus, error) {
	var st RouteStatus
	if err := c.call(ctx, "POST", "/localapi/v1/routes", p, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
