package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// WireGuardNode describes a WireGuard-only member to add: a device with
// stock WireGuard (a phone, a router) that connects through the gateway
// node Via (see docs/WIREGUARD.md).
type WireGuardNode struct {
	UserID int64
	Name   string      // its DNS label (made unique like a hostname)
	Key    pubkey.Node // the device's public key
	Via    int64       // the gateway node's ID
	Tags   []string
	Expiry time.Time // zero: never
}

// ErrBadGateway is returned when the gateway named for a WireGuard-only
// member is missing or is itself a WireGuard-only member.
var ErrBadGateway = errors.New("store: the gateway must be a Warren node")

// AddWireGuardNode registers a WireGuard-only member: in one transaction it
// checks the key (not zero, not low-order, not used by any node) and the
// gateway (a Warren node), derives a unique name and allocates both
// addresses.
func (s *Store) AddWireGuardNode(ctx context.Context, w WireGuardNode) (*Node, error) {
	if w.Key.IsZero() || w.Key.PublicKey.IsLowOrder() {
		return nil, fmt.Errorf("add wireguard node: %w: the public key is zero or of low order", ErrInvalid)
	}
	tags, err := normTags(w.Tags)
	if err != nil {
		return nil, fmt.Errorf("add wireguard node: %w", err)
	}
	if dnsname.FromHostname(w.Name) == "" {
		return nil, fmt.Errorf("add wireguard node: %w: name %q", ErrInvalid, w.Name)
	}
	var n *Node
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.registrationLock(ctx, tx); err != nil {
			return err
		}
		var used int64
		switch err := tx.QueryRowContext(ctx, s.q("SELECT id FROM nodes WHERE node_key = ?"), w.Key.String()).Scan(&used); {
		case err == nil:
			return ErrNodeKeyInUse
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var via int64
		switch err := tx.QueryRowContext(ctx, s.q("SELECT wg_via FROM nodes WHERE id = ?"), w.Via).Scan(&via); {
		case errors.Is(err, sql.ErrNoRows):
			return ErrBadGateway
		case err != nil:
			return err
		case via != 0:
			return ErrBadGateway
		}
		name, v4, v6, err := s.newIdentity(ctx, tx, w.Name)
		if err != nil {
			return err
		}
		now := s.now()
		n = &Node{UserID: w.UserID, NodeKey: w.Key, Hostname: w.Name, Name: name, IPv4: v4, IPv6: v6,
			Endpoints: []string{}, Expiry: w.Expiry, Created: now, Tags: tags, Via: w.Via}
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO nodes (user_id, node_key, hostname, name, ipv4, ipv6,
			endpoints, online, expires_at, ephemeral, created_at, tags, wg_via) VALUES (?, ?, ?, ?, ?, ?, '[]', FALSE, ?, FALSE, ?, ?, ?) RETURNING id`),
			n.UserID, w.Key.String(), w.Name, name, v4.String(), v6.String(), tsOf(w.Expiry), now.UnixNano(), joinTags(tags), w.Via).Scan(&n.ID)
	})
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, ErrNodeKeyInUse), errors.Is(err, ErrBadGateway), errors.Is(err, ErrAddressExhausted):
		return nil, fmt.Errorf("add wireguard node: %w", err)
	}
	return nil, wrap("add wireguard node", err)
}

// SetWireGuardVia moves a WireGuard-only member to another gateway (a
// Warren node); ErrNotFound if id is not a WireGuard-only member.
func (s *Store) SetWireGuardVia(ctx context.Context, id, via int64) error {
	err := s.exec(ctx, "set wireguard gateway", "UPDATE nodes SET wg_via = ? WHERE id = ? AND wg_via <> 0 AND ? <> id AND EXISTS "+
		"(SELECT 1 FROM nodes AS gw WHERE gw.id = ? AND gw.wg_via = 0)", via, id, via, via)
	if errors.Is(err, ErrNotFound) {
		if n, gerr := s.GetNode(ctx, id); gerr == nil && n.Via != 0 {
			return fmt.Errorf("set wireguard gateway: %w", ErrBadGateway)
		}
	}
	return err
}

// WireGuardReport is what a gateway says about one of its WireGuard-only
// members.
type WireGuardReport struct {
	ID               int64
	Online           bool
	LastHandshake    time.Time // zero: none yet
	RxBytes, TxBytes int64
	// At is when the gateway made the report (the server's clock): the
	// node's TrafficAt when the counters changed.
	At time.Time
}

// ReportWireGuard records what gateway said about its WireGuard-only
// members; reports about nodes that are not gateway's are ignored. Only
// rows that change are written; TrafficAt moves only with the counters.
func (s *Store) ReportWireGuard(ctx context.Context, gateway int64, reports []WireGuardReport) error {
	for _, r := range reports {
		at := r.At
		if at.IsZero() {
			at = s.now()
		}
		err := s.exec(ctx, "report wireguard", `UPDATE nodes SET online = ?, last_seen = ?,
			wg_reported_at = CASE WHEN wg_rx <> ? OR wg_tx <> ? THEN CAST(? AS BIGINT) ELSE wg_reported_at END, wg_rx = ?, wg_tx = ?
			WHERE id = ? AND wg_via = ? AND wg_via <> 0 AND (online <> ? OR COALESCE(last_seen, 0) <> COALESCE(CAST(? AS BIGINT), 0) OR wg_rx <> ? OR wg_tx <> ?)`,
			r.Online, tsOf(r.LastHandshake), r.RxBytes, r.TxBytes, at.UnixNano(), r.RxBytes, r.TxBytes,
			r.ID, gateway, r.Online, tsOf(r.LastHandshake), r.RxBytes, r.TxBytes)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}
