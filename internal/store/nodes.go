package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// Node is a registered machine.
type Node struct {
	ID        int64
	UserID    int64
	AuthKeyID int64       // 0 if the key was deleted
	NodeKey   pubkey.Node // zero if the stored text is not a key (such a node is in no map)
	Hostname  string      // as reported by the node
	Name      string      // unique DNS label derived from Hostname
	IPv4      netip.Addr  // unique, from the IPv4 prefix
	IPv6      netip.Addr  // unique, from the IPv6 prefix
	Endpoints []string
	LastSeen  time.Time
	Online    bool
	Replica   string    // the replica the node's stream is on (replicas.go); "" on SQLite
	Expiry    time.Time // zero: never
	Ephemeral bool
	Created   time.Time
	DiscoKey  pubkey.Disco // the node's path-probe public key, as reported; zero if none (or unusable)
	// Tags come from the auth key the node (last) registered with; a
	// tagged node is owned by its tags, not its user (package policy).
	Tags []string
	// AdvertisedRoutes are the prefixes the node offers to route
	// (reported by the node); ApprovedRoutes those an admin approved
	// (routes.go). Both sorted; peers get the intersection.
	AdvertisedRoutes []netip.Prefix
	ApprovedRoutes   []netip.Prefix
	// Via is nonzero for a WireGuard-only member (wireguard.go): the ID
	// of the gateway node it connects through. RxBytes/TxBytes are its
	// traffic as the gateway last reported it, TrafficAt when the gateway
	// reported these values (zero: never).
	Via              int64
	RxBytes, TxBytes int64
	TrafficAt        time.Time
	// Approved is false for a node that joined interactively in approval
	// mode until an admin approves it (registrations.go); such a node is
	// in no map.
	Approved bool
	// Interactive: the node joined (or last re-logged in) by a person
	// signing in, not with an auth key.
	Interactive bool
	// RelayPort is the UDP port the node offers to serve as a peer relay
	// on (reported by the node; 0: none); RelayApproved says an admin
	// approved it as one (peerrelays.go).
	RelayPort     uint16
	RelayApproved bool
}

// RegisterOptions carry the optional parts of a registration.
type RegisterOptions struct {
	Endpoints []string
	Expiry    time.Time // node key expiry; zero: never
}

const nodeCols = "id, user_id, auth_key_id, node_key, hostname, name, ipv4, ipv6, endpoints, last_seen, online, expires_at, ephemeral, created_at, disco_key, tags, advertised_routes, approved_routes, wg_via, wg_rx, wg_tx, wg_reported_at, approved, interactive, replica, relay_port, relay_approved"

func scanNode(sc interface{ Scan(...any) error }) (*Node, error) {
	var n Node
	var akid, seen, exp, trafficAt sql.NullInt64
	var v4, v6, eps string
	var created int64
	var tags, adv, appr, nodeKey, discoKey string
	var relayPort int64
	if err := sc.Scan(&n.ID, &n.UserID, &akid, &nodeKey, &n.Hostname, &n.Name, &v4, &v6, &eps, &seen, &n.Online, &exp, &n.Ephemeral, &created, &discoKey, &tags, &adv, &appr, &n.Via, &n.RxBytes, &n.TxBytes, &trafficAt, &n.Approved, &n.Interactive, &n.Replica, &relayPort, &n.RelayApproved); err != nil {
		return nil, err
	}
	if relayPort > 0 && relayPort <= 65535 {
		n.RelayPort = uint16(relayPort)
	}
	// Keys are parsed once, here. A key that does not parse (written by
	// hand, or by an old version) leaves the zero key: the node is listed
	// but put in no network map, and a disco key is simply absent.
	n.NodeKey, _ = pubkey.ParseNode(nodeKey)
	n.DiscoKey, _ = pubkey.ParseDisco(discoKey)
	n.AdvertisedRoutes, n.ApprovedRoutes = splitRoutes(adv), splitRoutes(appr)
	n.Tags = splitTags(tags)
	n.AuthKeyID = akid.Int64
	n.LastSeen, n.Expiry, n.Created = timeOf(seen), timeOf(exp), time.Unix(0, created)
	n.TrafficAt = timeOf(trafficAt)
	var err error
	if n.IPv4, err = netip.ParseAddr(v4); err != nil {
		return nil, fmt.Errorf("node %d ipv4: %w", n.ID, err)
	}
	if n.IPv6, err = netip.ParseAddr(v6); err != nil {
		return nil, fmt.Errorf("node %d ipv6: %w", n.ID, err)
	}
	if err := json.Unmarshal([]byte(eps), &n.Endpoints); err != nil {
		return nil, fmt.Errorf("node %d endpoints: %w", n.ID, err)
	}
	return &n, nil
}

// RegisterNode joins a node with a pre-auth key. In one transaction it
// validates the key (known, secret matches, not expired, and if one-off not
// yet used), consumes it, derives a unique name and allocates both addresses.
// A one-off key is therefore usable exactly once even by concurrent joins.
//
// Registering a node key that already exists for another user fails with
// ErrNodeKeyInUse. For the key's own user the auth key's rules hold as for
// a new node, so that an admin's expiry cannot be undone with a spent key:
//   - an expired node comes back only with a key it may still use (a
//     reusable key, or a one-off key not yet used), which is consumed; its
//     expiry is then o.Expiry, as for a new registration;
//   - a node that has not expired keeps its expiry. Repeating the
//     registration with the key it joined with is an idempotent retry;
//     another key must be usable, and is consumed.
//
// Either way the node takes the key's tags and keeps its name and addresses.
func (s *Store) RegisterNode(ctx context.Context, authKey string, key pubkey.Node, hostname string, o RegisterOptions) (*Node, error) {
	nodeKey := key.String()
	if key.IsZero() {
		return nil, fmt.Errorf("register node: %w: node key", ErrInvalid)
	}
	eps, err := json.Marshal(nonNil(o.Endpoints))
	if err != nil {
		return nil, fmt.Errorf("register node: %w: endpoints", ErrInvalid)
	}
	var n *Node
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		k, err := s.lockPreAuthKey(ctx, tx, authKey)
		if err != nil {
			return err
		}
		if err := s.registrationLock(ctx, tx); err != nil {
			return err
		}
		existing, err := scanNode(tx.QueryRowContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE node_key = ?"), nodeKey))
		switch {
		case err == nil && existing.Via != 0:
			return ErrNodeKeyInUse // a WireGuard-only member's key (wireguard.go)
		case err == nil && existing.UserID == k.UserID:
			n, err = s.reregister(ctx, tx, existing, k, o)
			return err
		case err == nil:
			return ErrNodeKeyInUse
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		now := s.now()
		if err := s.consumePreAuthKey(ctx, tx, k, now); err != nil {
			return err
		}
		name, v4, v6, err := s.newIdentity(ctx, tx, hostname)
		if err != nil {
			return err
		}
		n = &Node{UserID: k.UserID, AuthKeyID: k.ID, NodeKey: key, Hostname: hostname, Name: name, IPv4: v4, IPv6: v6,
			Endpoints: nonNil(o.Endpoints), Expiry: o.Expiry, Ephemeral: k.Ephemeral, Created: now, Tags: k.Tags, Approved: true}
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO nodes (user_id, auth_key_id, node_key, hostname, name, ipv4, ipv6,
			endpoints, online, expires_at, ephemeral, created_at, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, FALSE, ?, ?, ?, ?) RETURNING id`),
			n.UserID, n.AuthKeyID, nodeKey, hostname, name, v4.String(), v6.String(), string(eps), tsOf(o.Expiry), n.Ephemeral, now.UnixNano(), joinTags(k.Tags)).Scan(&n.ID)
	})
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, ErrAuthKeyInvalid), errors.Is(err, ErrAuthKeyExpired), errors.Is(err, ErrAuthKeyUsed),
		errors.Is(err, ErrNodeKeyInUse), errors.Is(err, ErrAddressExhausted):
		return nil, fmt.Errorf("register node: %w", err)
	}
	return nil, wrap("register node", err)
}

// reregister applies a registration of existing's key again with auth key
// k (see RegisterNode) inside tx and returns the node as it now is.
func (s *Store) reregister(ctx context.Context, tx *sql.Tx, existing *Node, k *PreAuthKey, o RegisterOptions) (*Node, error) {
	now := s.now()
	expired := !existing.Expiry.IsZero() && !now.Before(existing.Expiry)
	if !expired && existing.AuthKeyID == k.ID {
		return existing, nil // a retry: nothing is consumed or changed
	}
	if err := s.consumePreAuthKey(ctx, tx, k, now); err != nil {
		return nil, err
	}
	expiry := existing.Expiry
	if expired {
		expiry = o.Expiry
	}
	if _, err := tx.ExecContext(ctx, s.q("UPDATE nodes SET expires_at = ?, tags = ?, auth_key_id = ? WHERE id = ?"),
		tsOf(expiry), joinTags(k.Tags), k.ID, existing.ID); err != nil {
		return nil, err
	}
	existing.Expiry, existing.Tags, existing.AuthKeyID = expiry, k.Tags, k.ID
	return existing, nil
}

// consumePreAuthKey counts one use of k, locked by lockPreAuthKey in tx;
// ErrAuthKeyUsed if it is a one-off key already used.
func (s *Store) consumePreAuthKey(ctx context.Context, tx *sql.Tx, k *PreAuthKey, now time.Time) error {
	if !k.Reusable && k.UsedCount > 0 {
		return ErrAuthKeyUsed
	}
	res, err := tx.ExecContext(ctx, s.q("UPDATE preauth_keys SET used_count = used_count + 1, used_at = ? WHERE id = ? AND (reusable OR used_count = 0)"),
		now.UnixNano(), k.ID)
	if err != nil {
		return err
	}
	if c, err := res.RowsAffected(); err != nil || c != 1 {
		return ErrAuthKeyUsed // belt and braces: the row lock makes this unreachable
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// uniqueName derives a name from hostname not used by any node other than
// self: the label itself, else label-1, label-2, ... (shortened to fit 63).
// newIdentity gives a new node its unique name (from hostname) and both
// tunnel addresses, inside the registration's transaction.
func (s *Store) newIdentity(ctx context.Context, tx *sql.Tx, hostname string) (name string, v4, v6 netip.Addr, err error) {
	if name, err = s.uniqueName(ctx, tx, hostname, 0); err != nil {
		return "", netip.Addr{}, netip.Addr{}, err
	}
	if v4, err = s.allocate(ctx, tx, "ipv4", s.v4); err != nil {
		return "", netip.Addr{}, netip.Addr{}, err
	}
	if v6, err = s.allocate(ctx, tx, "ipv6", s.v6); err != nil {
		return "", netip.Addr{}, netip.Addr{}, err
	}
	return name, v4, v6, nil
}

func (s *Store) uniqueName(ctx context.Context, tx *sql.Tx, hostname string, self int64) (string, error) {
	base := dnsname.FromHostname(hostname)
	taken := map[string]bool{}
	rows, err := tx.QueryContext(ctx, s.q("SELECT name FROM nodes WHERE id <> ? AND (name = ? OR name LIKE ?)"), self, base, truncate(base, 52)+"%")
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return "", err
		}
		taken[n] = true
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if !taken[base] {
		return base, nil
	}
	for i := 1; ; i++ {
		suf := "-" + strconv.Itoa(i)
		if n := strings.TrimRight(truncate(base, 63-len(suf)), "-") + suf; !taken[n] {
			return n, nil
		}
	}
}

// allocate returns the lowest address of prefix not held by any node,
// skipping the prefix's first address (and, for IPv4, its last) and the
// service addresses (ServiceAddrs). It runs
// inside the registration transaction, which holds the write lock.
func (s *Store) allocate(ctx context.Context, tx *sql.Tx, col string, p netip.Prefix) (netip.Addr, error) {
	used := map[netip.Addr]bool{}
	rows, err := tx.QueryContext(ctx, "SELECT "+col+" FROM nodes")
	if err != nil {
		return netip.Addr{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return netip.Addr{}, err
		}
		if ip, err := netip.ParseAddr(a); err == nil {
			used[ip] = true
		}
	}
	if err := rows.Err(); err != nil {
		return netip.Addr{}, err
	}
	// Hosts in the prefix, minus the first (and the IPv4 broadcast).
	size := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
	limit := size.Int64() - 1
	if !size.IsInt64() || limit > int64(len(used))+4 {
		limit = int64(len(used)) + 4 // at most len(used) + 2 are taken, so one of these is free
	}
	if p.Addr().Is4() {
		limit = min(limit, size.Int64()-2)
	}
	a := p.Masked().Addr()
	for i := int64(0); i < limit; i++ {
		a = a.Next()
		if !used[a] && !s.isServiceAddr(a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %v", ErrAddressExhausted, p)
}

// GetNode returns a node by ID.
func (s *Store) GetNode(ctx context.Context, id int64) (*Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE id = ?"), id))
	return n, wrap("get node", err)
}

// GetNodeByKey returns a node by its public key.
func (s *Store) GetNodeByKey(ctx context.Context, key pubkey.Node) (*Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE node_key = ?"), key.String()))
	return n, wrap("get node", err)
}

// ListNodes returns the nodes of one user (userID > 0) or all nodes.
func (s *Store) ListNodes(ctx context.Context, userID int64) ([]*Node, error) {
	rows, err := s.db.QueryContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE ? = 0 OR user_id = ? ORDER BY id"), userID, userID)
	if err != nil {
		return nil, wrap("list nodes", err)
	}
	defer rows.Close()
	var out []*Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, wrap("list nodes", err)
		}
		out = append(out, n)
	}
	return out, wrap("list nodes", rows.Err())
}

// UpdateEndpoints replaces a node's reported endpoints.
func (s *Store) UpdateEndpoints(ctx context.Context, id int64, endpoints []string) error {
	eps, err := json.Marshal(nonNil(endpoints))
	if err != nil {
		return fmt.Errorf("update endpoints: %w", ErrInvalid)
	}
	return s.exec(ctx, "update endpoints", "UPDATE nodes SET endpoints = ? WHERE id = ?", string(eps), id)
}

// SetDiscoKey records the path-probe key a node reported; ErrConflict if
// another node holds it (its probes and answers would be taken for that
// node's). The check and the write are one statement.
func (s *Store) SetDiscoKey(ctx context.Context, id int64, disco pubkey.Disco) error {
	key := disco.Text()
	err := s.exec(ctx, "set disco key", "UPDATE nodes SET disco_key = ? WHERE id = ? AND (? = '' OR NOT EXISTS "+
		"(SELECT 1 FROM nodes AS other WHERE other.disco_key = ? AND other.id <> ?))", key, id, key, key, id)
	if errors.Is(err, ErrNotFound) && key != "" {
		var holder int64
		qerr := s.db.QueryRowContext(ctx, s.q("SELECT id FROM nodes WHERE disco_key = ? AND id <> ?"), key, id).Scan(&holder)
		if qerr == nil {
			return fmt.Errorf("set disco key: %w: another node holds this disco key", ErrConflict)
		}
	}
	return err
}

// SetOnline records whether a node is connected, and when it was last seen.
// A gateway going offline takes its WireGuard-only members with it
// (wireguard.go): nothing reports their handshakes any more.
func (s *Store) SetOnline(ctx context.Context, id int64, online bool, lastSeen time.Time) error {
	if err := s.exec(ctx, "set online", "UPDATE nodes SET online = ?, last_seen = ? WHERE id = ?", online, tsOf(lastSeen), id); err != nil {
		return err
	}
	if online {
		return nil
	}
	err := s.exec(ctx, "set online", "UPDATE nodes SET online = FALSE WHERE wg_via = ? AND wg_via <> 0 AND online", id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// SetNodeExpiry sets (or with a zero time clears) a node's expiry.
func (s *Store) SetNodeExpiry(ctx context.Context, id int64, expiry time.Time) error {
	return s.exec(ctx, "set node expiry", "UPDATE nodes SET expires_at = ? WHERE id = ?", tsOf(expiry), id)
}

// RenameNode gives a node a new name; ErrInvalid unless name is already a
// DNS label, ErrConflict if another node has it.
func (s *Store) RenameNode(ctx context.Context, id int64, name string) error {
	if !dnsname.IsCanonicalNodeName(name) {
		return fmt.Errorf("rename node: %w: %q is not a DNS label", ErrInvalid, name)
	}
	return s.exec(ctx, "rename node", "UPDATE nodes SET name = ? WHERE id = ?", name, id)
}

// RotateNodeKey replaces a node's key, keeping its ID, name and addresses;
// ErrNodeKeyInUse if another node has newKey, ErrNotFound if id is gone.
func (s *Store) RotateNodeKey(ctx context.Context, id int64, newKey pubkey.Node) error {
	if newKey.IsZero() {
		return fmt.Errorf("rotate node key: %w: node key", ErrInvalid)
	}
	err := s.exec(ctx, "rotate node key", "UPDATE nodes SET node_key = ? WHERE id = ?", newKey.String(), id)
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("rotate node key: %w", ErrNodeKeyInUse)
	}
	return err
}

// DeleteNode removes a node, freeing its name and addresses.
func (s *Store) DeleteNode(ctx context.Context, id int64) error {
	return s.exec(ctx, "delete node", "DELETE FROM nodes WHERE id = ?", id)
}

// MagicDNSv4 is the IPv4 address every node's resolver answers on.
var MagicDNSv4 = netip.MustParseAddr("100.100.100.100")

// ServiceAddrs are the addresses no node gets: 100.100.100.100 and the
// IPv6 prefix's address ending in ::53, where each node answers DNS for
// itself.
func (s *Store) ServiceAddrs() []netip.Addr {
	return []netip.Addr{MagicDNSv4, serviceV6(s.v6)}
}

// serviceV6 is the address ::53 within p.
func serviceV6(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	b[15] = 0x53
	return netip.AddrFrom16(b)
}

func (s *Store) isServiceAddr(a netip.Addr) bool {
	return a == MagicDNSv4 || a == serviceV6(s.v6)
}
