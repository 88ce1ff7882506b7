package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/store"
)

// The JSON shapes of the API. Times are RFC 3339 and left out when unset
// ("never").

// User is a user as the API shows it.
type User struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// AuthKey is a pre-auth key; Key (the secret) is set only in the response
// that created it.
type AuthKey struct {
	ID         int64      `json:"id"`
	Key        string     `json:"key,omitempty"`
	Prefix     string     `json:"prefix"`
	User       string     `json:"user"`
	Reusable   bool       `json:"reusable"`
	Ephemeral  bool       `json:"ephemeral"`
	Expiration *time.Time `json:"expiration,omitempty"`
	Expired    bool       `json:"expired"`
	UsedCount  int64      `json:"used_count"`
	LastUsed   *time.Time `json:"last_used,omitempty"`
	Created    time.Time  `json:"created"`
	Tags       []string   `json:"tags,omitempty"`
}

// Node is a node as the API shows it.
type Node struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	User      string     `json:"user"`
	Hostname  string     `json:"hostname"`
	NodeKey   string     `json:"node_key"` // base64 public key; relays vouch by it
	Addresses []string   `json:"addresses"`
	Endpoints []string   `json:"endpoints"`
	Online    bool       `json:"online"`
	LastSeen  *time.Time `json:"last_seen,omitempty"`
	Expiry    *time.Time `json:"expiry,omitempty"`
	Expired   bool       `json:"expired"`
	Ephemeral bool       `json:"ephemeral"`
	Created   time.Time  `json:"created"`
	Tags      []string   `json:"tags,omitempty"` // a tagged node is owned by its tags
	// Via is set for a WireGuard-only member: its gateway's node ID; RxBytes
	// and TxBytes its traffic as the gateway last reported it.
	Via     int64 `json:"via,omitempty"`
	RxBytes int64 `json:"rx_bytes,omitempty"`
	TxBytes int64 `json:"tx_bytes,omitempty"`
	// Approved is false while a node joined by signing in waits for an
	// admin (node_approval); Interactive: it joined by signing in.
	Approved    bool `json:"approved"`
	Interactive bool `json:"interactive,omitempty"`
	// OS and Version are what the node last reported about itself
	// (empty: nothing yet).
	OS      string `json:"os,omitempty"`
	Version string `json:"version,omitempty"`
}

// APIKey is an admin API key; Key is set only in the response that created
// it.
type APIKey struct {
	ID         int64      `json:"id"`
	Key        string     `json:"key,omitempty"`
	Prefix     string     `json:"prefix"`
	Expiration *time.Time `json:"expiration,omitempty"`
	Expired    bool       `json:"expired"`
	LastUsed   *time.Time `json:"last_used,omitempty"`
	Created    time.Time  `json:"created"`
	// Scope is "admin" (everything) or "relay" (only GET
	// /api/v1/relay/nodes, for a standalone relay).
	Scope string `json:"scope"`
}

// Request bodies.
type (
	// NameRequest creates or renames a user, or renames a node.
	NameRequest struct {
		Name string `json:"name"`
	}
	// AuthKeyRequest creates a pre-auth key; Expiration is a duration
	// ("1h", "30d"), empty for never.
	AuthKeyRequest struct {
		User       string `json:"user"`
		Reusable   bool   `json:"reusable"`
		Ephemeral  bool   `json:"ephemeral"`
		Expiration string `json:"expiration"`
		// Tags ("tag:NAME") are given to the nodes joining with the key;
		// the policy's tagOwners must let the user use each of them.
		Tags []string `json:"tags,omitempty"`
	}
	// APIKeyRequest creates an admin API key.
	APIKeyRequest struct {
		Expiration string `json:"expiration"`
		// Scope is "admin" (the default) or "relay".
		Scope string `json:"scope,omitempty"`
	}
)

func opt(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func expired(t time.Time, now time.Time) bool { return !t.IsZero() && !now.Before(t) }

func toUser(u *store.User) User { return User{ID: u.ID, Name: u.Name, Created: u.Created.UTC()} }

func toAuthKey(k *store.PreAuthKey, user string, now time.Time) AuthKey {
	return AuthKey{ID: k.ID, Prefix: k.Prefix, User: user, Reusable: k.Reusable, Ephemeral: k.Ephemeral,
		Expiration: opt(k.Expiry), Expired: expired(k.Expiry, now), UsedCount: k.UsedCount,
		LastUsed: opt(k.UsedAt), Created: k.Created.UTC(), Tags: k.Tags}
}

func toNode(n *store.Node, user string, now time.Time) Node {
	out := Node{ID: n.ID, Name: n.Name, User: user, Hostname: n.Hostname, NodeKey: n.NodeKey.Text(), Addresses: []string{},
		Endpoints: n.Endpoints, Online: n.Online, LastSeen: opt(n.LastSeen), Expiry: opt(n.Expiry),
		Expired: expired(n.Expiry, now), Ephemeral: n.Ephemeral, Created: n.Created.UTC(), Tags: n.Tags,
		Via: n.Via, RxBytes: n.RxBytes, TxBytes: n.TxBytes, Approved: n.Approved, Interactive: n.Interactive}
	if out.Endpoints == nil {
		out.Endpoints = []string{}
	}
	if n.IPv4.IsValid() {
		out.Addresses = append(out.Addresses, n.IPv4.String())
	}
	if n.IPv6.IsValid() {
		out.Addresses = append(out.Addresses, n.IPv6.String())
	}
	return out
}

func toAPIKey(k *store.APIKey, now time.Time) APIKey {
	return APIKey{ID: k.ID, Prefix: k.Prefix, Expiration: opt(k.Expiry), Expired: expired(k.Expiry, now),
		LastUsed: opt(k.LastUsed), Created: k.Created.UTC(), Scope: ScopeName(k.Scope)}
}

// ScopeName is how an API key scope is shown: "admin" or "relay".
func ScopeName(scope string) string {
	if scope == store.ScopeAdmin {
		return "admin"
	}
	return scope
}

// userNames maps user IDs to names.
func (a *api) userNames(ctx context.Context) (map[int64]string, error) {
	us, err := a.st.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[int64]string, len(us))
	for _, u := range us {
		m[u.ID] = u.Name
	}
	return m, nil
}

func (a *api) userByName(ctx context.Context, name string) (*store.User, error) {
	if name == "" {
		return nil, errorf(http.StatusBadRequest, "user name is empty")
	}
	u, err := a.st.GetUserByName(ctx, name)
	return u, storeErr(err, "user "+strconv.Quote(name))
}

// userFilter resolves the optional ?user=NAME of a listing (0: all).
func (a *api) userFilter(r *http.Request) (int64, error) {
	if !r.URL.Query().Has("user") {
		return 0, nil
	}
	u, err := a.userByName(r.Context(), r.URL.Query().Get("user"))
	if err != nil {
		return 0, err
	}
	return u.ID, nil
}

// Users.

func (a *api) listUsers(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	us, err := a.st.ListUsers(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := make([]User, 0, len(us))
	for _, u := range us {
		out = append(out, toUser(u))
	}
	return http.StatusOK, out, nil
}

func (a *api) createUser(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req NameRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	u, err := a.st.CreateUser(r.Context(), req.Name)
	if err != nil {
		return 0, nil, storeErr(err, "user "+strconv.Quote(req.Name))
	}
	a.notify()
	return http.StatusCreated, toUser(u), nil
}

func (a *api) getUser(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	u, err := a.userByName(r.Context(), r.PathValue("user"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toUser(u), nil
}

func (a *api) renameUser(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req NameRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	u, err := a.userByName(r.Context(), r.PathValue("user"))
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.RenameUser(r.Context(), u.ID, req.Name); err != nil {
		return 0, nil, storeErr(err, "user "+strconv.Quote(req.Name))
	}
	a.notify()
	u.Name = req.Name
	return http.StatusOK, toUser(u), nil
}

func (a *api) deleteUser(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	u, err := a.userByName(r.Context(), r.PathValue("user"))
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.DeleteUser(r.Context(), u.ID); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return 0, nil, errorf(http.StatusConflict, "user %q still owns nodes; delete them first", u.Name)
		}
		return 0, nil, storeErr(err, "user "+strconv.Quote(u.Name))
	}
	a.notify()
	return http.StatusNoContent, nil, nil
}

// Pre-auth keys.

func (a *api) listAuthKeys(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	uid, err := a.userFilter(r)
	if err != nil {
		return 0, nil, err
	}
	ks, err := a.st.ListPreAuthKeys(r.Context(), uid)
	if err != nil {
		return 0, nil, err
	}
	names, err := a.userNames(r.Context())
	if err != nil {
		return 0, nil, err
	}
	now := time.Now()
	out := make([]AuthKey, 0, len(ks))
	for _, k := range ks {
		out = append(out, toAuthKey(k, names[k.UserID], now))
	}
	return http.StatusOK, out, nil
}

func (a *api) createAuthKey(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req AuthKeyRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	if req.User == "" {
		return 0, nil, errorf(http.StatusBadRequest, "user is required")
	}
	exp, err := expiryOf(req.Expiration)
	if err != nil {
		return 0, nil, err
	}
	u, err := a.userByName(r.Context(), req.User)
	if err != nil {
		return 0, nil, err
	}
	if err := a.checkTags(r.Context(), req.Tags, u.Name); err != nil {
		return 0, nil, err
	}
	secret, k, err := a.st.CreatePreAuthKey(r.Context(), u.ID, store.PreAuthKeyOptions{Reusable: req.Reusable, Ephemeral: req.Ephemeral, Expiry: exp, Tags: req.Tags})
	if err != nil {
		return 0, nil, storeErr(err, "user "+strconv.Quote(req.User))
	}
	out := toAuthKey(k, u.Name, time.Now())
	out.Key = secret
	return http.StatusCreated, out, nil
}

func (a *api) expireAuthKey(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r, "id", "auth key")
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.ExpirePreAuthKey(r.Context(), id); err != nil {
		return 0, nil, storeErr(err, "auth key "+strconv.FormatInt(id, 10))
	}
	ks, err := a.st.ListPreAuthKeys(r.Context(), 0)
	if err != nil {
		return 0, nil, err
	}
	for _, k := range ks {
		if k.ID == id {
			u, err := a.st.GetUser(r.Context(), k.UserID)
			name := ""
			if err == nil {
				name = u.Name
			}
			return http.StatusOK, toAuthKey(k, name, time.Now()), nil
		}
	}
	return 0, nil, errorf(http.StatusNotFound, "auth key %d not found", id)
}

func (a *api) deleteAuthKey(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r, "id", "auth key")
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.DeletePreAuthKey(r.Context(), id); err != nil {
		return 0, nil, storeErr(err, "auth key "+strconv.FormatInt(id, 10))
	}
	return http.StatusNoContent, nil, nil
}

// Nodes.

// nodeByRef finds a node by ID, or else by name.
func (a *api) nodeByRef(ctx context.Context, ref string) (*store.Node, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil && id > 0 {
		n, err := a.st.GetNode(ctx, id)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	ns, err := a.st.ListNodes(ctx, 0)
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		if n.Name == ref {
			return n, nil
		}
	}
	return nil, errorf(http.StatusNotFound, "node %q not found (give its ID or name)", ref)
}

func (a *api) nodeOut(ctx context.Context, n *store.Node) Node {
	name := ""
	if u, err := a.st.GetUser(ctx, n.UserID); err == nil {
		name = u.Name
	}
	out := toNode(n, name, time.Now())
	if hi, err := a.st.ListHostinfo(ctx); err == nil {
		withHostinfo(&out, hi)
	}
	return out
}

// withHostinfo adds what the node reported about itself.
func withHostinfo(n *Node, hi map[int64]store.Hostinfo) {
	if h, ok := hi[n.ID]; ok {
		n.OS, n.Version = h.OS, h.Version
	}
}

func (a *api) listNodes(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	uid, err := a.userFilter(r)
	if err != nil {
		return 0, nil, err
	}
	ns, err := a.st.ListNodes(r.Context(), uid)
	if err != nil {
		return 0, nil, err
	}
	names, err := a.userNames(r.Context())
	if err != nil {
		return 0, nil, err
	}
	hi, err := a.st.ListHostinfo(r.Context())
	if err != nil {
		return 0, nil, err
	}
	now := time.Now()
	out := make([]Node, 0, len(ns))
	for _, n := range ns {
		out = append(out, toNode(n, names[n.UserID], now))
		withHostinfo(&out[len(out)-1], hi)
	}
	return http.StatusOK, out, nil
}

func (a *api) getNode(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, a.nodeOut(r.Context(), n), nil
}

func (a *api) renameNode(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req NameRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	if !dnsname.IsCanonicalNodeName(req.Name) {
		return 0, nil, errorf(http.StatusBadRequest, "node name %q is not a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'; try %q)", req.Name, dnsname.FromHostname(req.Name))
	}
	n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.RenameNode(r.Context(), n.ID, req.Name); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return 0, nil, errorf(http.StatusConflict, "node name %q is already taken", req.Name)
		}
		return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
	}
	a.notify()
	n.Name = req.Name
	return http.StatusOK, a.nodeOut(r.Context(), n), nil
}

func (a *api) expireNode(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	now := time.Now()
	if err := a.st.SetNodeExpiry(r.Context(), n.ID, now); err != nil {
		return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
	}
	a.notify()
	n.Expiry = now
	return http.StatusOK, a.nodeOut(r.Context(), n), nil
}

// approveNode lets a node that joined by signing in, in approval mode,
// into the network.
func (a *api) approveNode(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.ApproveNode(r.Context(), n.ID); err != nil {
		return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
	}
	a.notify()
	n.Approved = true
	return http.StatusOK, a.nodeOut(r.Context(), n), nil
}

func (a *api) deleteNode(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.DeleteNode(r.Context(), n.ID); err != nil {
		return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
	}
	a.notify()
	return http.StatusNoContent, nil, nil
}

// Admin API keys.

func (a *api) listAPIKeys(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ks, err := a.st.ListAPIKeys(r.Context())
	if err != nil {
		return 0, nil, err
	}
	now := time.Now()
	out := make([]APIKey, 0, len(ks))
	for _, k := range ks {
		out = append(out, toAPIKey(k, now))
	}
	return http.StatusOK, out, nil
}

func (a *api) createAPIKey(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req APIKeyRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	exp, err := expiryOf(req.Expiration)
	if err != nil {
		return 0, nil, err
	}
	scope := req.Scope
	switch scope {
	case "", "admin":
		scope = store.ScopeAdmin
	case store.ScopeRelay:
	default:
		return 0, nil, errorf(http.StatusBadRequest, "scope %q: want admin or relay", req.Scope)
	}
	secret, k, err := a.st.CreateScopedAPIKey(r.Context(), scope, exp)
	if err != nil {
		return 0, nil, err
	}
	out := toAPIKey(k, time.Now())
	out.Key = secret
	return http.StatusCreated, out, nil
}

func (a *api) expireAPIKey(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r, "id", "API key")
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.ExpireAPIKey(r.Context(), id); err != nil {
		return 0, nil, storeErr(err, "API key "+strconv.FormatInt(id, 10))
	}
	ks, err := a.st.ListAPIKeys(r.Context())
	if err != nil {
		return 0, nil, err
	}
	for _, k := range ks {
		if k.ID == id {
			return http.StatusOK, toAPIKey(k, time.Now()), nil
		}
	}
	return 0, nil, errorf(http.StatusNotFound, "API key %d not found", id)
}

func (a *api) deleteAPIKey(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	id, err := pathID(r, "id", "API key")
	if err != nil {
		return 0, nil, err
	}
	if err := a.st.DeleteAPIKey(r.Context(), id); err != nil {
		return 0, nil, storeErr(err, "API key "+strconv.FormatInt(id, 10))
	}
	return http.StatusNoContent, nil, nil
}
