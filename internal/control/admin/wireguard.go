package admin

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/routeprefix"
	"github.com/warrenmesh/warren/internal/store"
)

// WireGuard-only members (docs/WIREGUARD.md): devices with stock WireGuard
// that join through a gateway node.

// WireGuardRequest adds a WireGuard-only member. PublicKey is the
// device's key; empty: the server generates a pair and returns the private
// key once, in this response only (it is not stored).
type WireGuardRequest struct {
	Name       string   `json:"name"`
	User       string   `json:"user"`
	Via        string   `json:"via"` // the gateway node: ID or name
	Tags       []string `json:"tags,omitempty"`
	PublicKey  string   `json:"public_key,omitempty"`
	Expiration string   `json:"expiration,omitempty"`
	// Endpoint overrides where the device reaches the gateway (HOST:PORT);
	// empty: the gateway's first reported endpoint.
	Endpoint string `json:"endpoint,omitempty"`
}

// WireGuardDevice is the answer: the member, and the wg-quick
// configuration the device needs (with the private key only when the
// server generated it, in the response that created it).
type WireGuardDevice struct {
	Node       Node   `json:"node"`
	Via        string `json:"via"`
	PrivateKey string `json:"private_key,omitempty"`
	Config     string `json:"config"`
}

// WireGuardChange moves a WireGuard-only member to another gateway and/or
// gives it a new public key (the old one stops working at once).
type WireGuardChange struct {
	Via       string `json:"via,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
}

func wireGuardRoutes(a *api) []route {
	return []route{
		{"POST /api/v1/wireguard", a.addWireGuard},
		{"PATCH /api/v1/nodes/{node}/wireguard", a.changeWireGuard},
		{"GET /api/v1/nodes/{node}/wireguard-config", a.wireGuardConfig},
	}
}

func (a *api) addWireGuard(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req WireGuardRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	u, err := a.st.GetUserByName(ctx, req.User)
	if err != nil {
		return 0, nil, storeErr(err, fmt.Sprintf("user %q", req.User))
	}
	gw, err := a.nodeByRef(ctx, req.Via)
	if err != nil {
		return 0, nil, err
	}
	if gw.Via != 0 {
		return 0, nil, errorf(http.StatusBadRequest, "gateway %q is itself a WireGuard-only member; give a Warren node", gw.Name)
	}
	var priv noise.PrivateKey
	var key pubkey.Node
	if req.PublicKey == "" {
		if priv, err = noise.GeneratePrivateKey(); err != nil {
			return 0, nil, err
		}
		key = pubkey.Node{PublicKey: priv.PublicKey()}
	} else if key, err = pubkey.ParseNode(req.PublicKey); err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "public key: not a base64 WireGuard public key")
	}
	if key.PublicKey.IsLowOrder() || key.IsZero() {
		return 0, nil, errorf(http.StatusBadRequest, "public key: a low-order point, refused")
	}
	expiry, err := expiryOf(req.Expiration)
	if err != nil {
		return 0, nil, err
	}
	n, err := a.st.AddWireGuardNode(ctx, store.WireGuardNode{UserID: u.ID, Name: req.Name, Key: key, Via: gw.ID, Tags: req.Tags, Expiry: expiry})
	switch {
	case errors.Is(err, store.ErrNodeKeyInUse):
		return 0, nil, errorf(http.StatusConflict, "public key: already used by another node")
	case errors.Is(err, store.ErrBadGateway):
		return 0, nil, errorf(http.StatusBadRequest, "gateway %q: must be a Warren node", req.Via)
	case err != nil:
		return 0, nil, storeErr(err, "node")
	}
	a.notify()
	cfg, err := a.deviceConfig(r, n, gw, req.Endpoint, priv)
	if err != nil {
		return 0, nil, err
	}
	out := WireGuardDevice{Node: a.nodeOut(ctx, n), Via: gw.Name, Config: cfg}
	if !priv.IsZero() {
		out.PrivateKey = priv.Base64()
	}
	return http.StatusCreated, out, nil
}

func (a *api) changeWireGuard(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req WireGuardChange
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	n, err := a.nodeByRef(ctx, r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	if n.Via == 0 {
		return 0, nil, errorf(http.StatusBadRequest, "node %q is a Warren node, not a WireGuard-only member", n.Name)
	}
	if req.Via != "" {
		gw, err := a.nodeByRef(ctx, req.Via)
		if err != nil {
			return 0, nil, err
		}
		if err := a.st.SetWireGuardVia(ctx, n.ID, gw.ID); errors.Is(err, store.ErrBadGateway) {
			return 0, nil, errorf(http.StatusBadRequest, "gateway %q: must be a Warren node", req.Via)
		} else if err != nil {
			return 0, nil, storeErr(err, "node "+n.Name)
		}
	}
	if req.PublicKey != "" {
		key, err := pubkey.ParseNode(req.PublicKey)
		if err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "public key: not a base64 WireGuard public key")
		}
		if key.PublicKey.IsLowOrder() || key.IsZero() {
			return 0, nil, errorf(http.StatusBadRequest, "public key: a low-order point, refused")
		}
		if err := a.st.RotateNodeKey(ctx, n.ID, key); errors.Is(err, store.ErrNodeKeyInUse) {
			return 0, nil, errorf(http.StatusConflict, "public key: already used by another node")
		} else if err != nil {
			return 0, nil, storeErr(err, "node "+n.Name)
		}
	}
	a.notify()
	if n, err = a.st.GetNode(ctx, n.ID); err != nil {
		return 0, nil, storeErr(err, "node")
	}
	return http.StatusOK, a.nodeOut(ctx, n), nil
}

func (a *api) wireGuardConfig(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	if n.Via == 0 {
		return 0, nil, errorf(http.StatusBadRequest, "node %q is a Warren node, not a WireGuard-only member: it has no WireGuard configuration", n.Name)
	}
	gw, err := a.st.GetNode(r.Context(), n.Via)
	if err != nil {
		return 0, nil, errorf(http.StatusConflict, "node %q: its gateway (node %d) is gone; give it another", n.Name, n.Via)
	}
	cfg, err := a.deviceConfig(r, n, gw, r.URL.Query().Get("endpoint"), noise.PrivateKey{})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, WireGuardDevice{Node: a.nodeOut(r.Context(), n), Via: gw.Name, Config: cfg}, nil
}

// deviceConfig is the wg-quick configuration of WireGuard-only member n
// behind gateway gw: its addresses, MagicDNS as its resolver, and the
// gateway as its one peer, carrying the warren's prefixes and the
// approved subnet routes. priv is written only when not zero.
func (a *api) deviceConfig(r *http.Request, n, gw *store.Node, endpoint string, priv noise.PrivateKey) (string, error) {
	if endpoint == "" {
		endpoint = gatewayEndpoint(gw.Endpoints)
	}
	if endpoint == "" {
		return "", errorf(http.StatusConflict, "gateway %q has reported no endpoint yet; give one (HOST:PORT) the device can reach", gw.Name)
	}
	if strings.ContainsAny(endpoint, " \t\r\n=#") || !strings.Contains(endpoint, ":") {
		return "", errorf(http.StatusBadRequest, "endpoint %q is not HOST:PORT", endpoint)
	}
	allowed := []netip.Prefix{a.st.IPv4Prefix(), a.st.IPv6Prefix()}
	nodes, err := a.st.ListNodes(r.Context(), 0)
	if err != nil {
		return "", err
	}
	for _, o := range nodes {
		for _, p := range o.EnabledRoutes() {
			if !routeprefix.IsExit(p) && !slices.Contains(allowed, p) {
				allowed = append(allowed, p)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Warren: %s (node %d) through gateway %s\n[Interface]\n", n.Name, n.ID, gw.Name)
	if !priv.IsZero() {
		fmt.Fprintf(&b, "PrivateKey = %s\n", priv.Base64())
	} else {
		fmt.Fprintf(&b, "# PrivateKey = the device's own (its public key is %s)\n", n.NodeKey.Text())
	}
	fmt.Fprintf(&b, "Address = %s/32, %s/128\n", n.IPv4, n.IPv6)
	fmt.Fprintf(&b, "DNS = %s, %s\n\n", store.MagicDNSv4, a.domain)
	fmt.Fprintf(&b, "[Peer]\nPublicKey = %s\nEndpoint = %s\n", gw.NodeKey.Text(), endpoint)
	strs := make([]string, len(allowed))
	for i, p := range allowed {
		strs[i] = p.String()
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\nPersistentKeepalive = 25\n", strings.Join(strs, ", "))
	return b.String(), nil
}

// gatewayEndpoint picks the address a device should try: the first
// reported IPv4 endpoint, else the first one.
func gatewayEndpoint(eps []string) string {
	for _, e := range eps {
		if ap, err := netip.ParseAddrPort(e); err == nil && ap.Addr().Is4() {
			return ap.String()
		}
	}
	if len(eps) > 0 {
		return eps[0]
	}
	return ""
}
