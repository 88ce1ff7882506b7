package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// Registration is an interactive registration: a node key waiting for a
// person to sign in for it (warren up without an auth key).
type Registration struct {
	RegID    string // one-time ID in the sign-in URL; not a secret
	NodeKey  pubkey.Node
	Hostname string
	UserID   int64 // who signed in for it; 0 while pending
	NodeID   int64 // the node it made; 0 while pending
	Expiry   time.Time
	Created  time.Time
}

// ErrRegistrationExpired: the registration ID is past its expiry.
var ErrRegistrationExpired = errors.New("store: registration expired")

// CreateRegistration starts an interactive registration of key that stays
// open for ttl.
func (s *Store) CreateRegistration(ctx context.Context, key pubkey.Node, hostname string, ttl time.Duration) (*Registration, error) {
	if key.IsZero() {
		return nil, fmt.Errorf("create registration: %w: node key", ErrInvalid)
	}
	var b [15]byte
	rand.Read(b[:])
	now := s.now()
	r := &Registration{RegID: strings.ToLower(base32.StdEncoding.EncodeToString(b[:])), NodeKey: key, Hostname: hostname,
		Expiry: now.Add(ttl), Created: now}
	unlock := s.lockWrite()
	defer unlock()
	// Old pending registrations go when new ones come.
	if _, err := s.db.ExecContext(ctx, s.q("DELETE FROM registrations WHERE expires_at <= ?"), now.UnixNano()); err != nil {
		return nil, wrap("create registration", err)
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO registrations (reg_id, node_key, hostname, expires_at, created_at)
		VALUES (?, ?, ?, ?, ?)`), r.RegID, key.String(), hostname, r.Expiry.UnixNano(), now.UnixNano())
	return r, wrap("create registration", err)
}

const regCols = "reg_id, node_key, hostname, user_id, node_id, expires_at, created_at"

func scanRegistration(sc interface{ Scan(...any) error }) (*Registration, error) {
	var r Registration
	var key string
	var uid, nid sql.NullInt64
	var exp, created int64
	if err := sc.Scan(&r.RegID, &key, &r.Hostname, &uid, &nid, &exp, &created); err != nil {
		return nil, err
	}
	r.NodeKey, _ = pubkey.ParseNode(key)
	r.UserID, r.NodeID = uid.Int64, nid.Int64
	r.Expiry, r.Created = time.Unix(0, exp), time.Unix(0, created)
	return &r, nil
}

// GetRegistration returns a registration by its ID (pending, completed or
// expired; ErrNotFound once removed).
func (s *Store) GetRegistration(ctx context.Context, regID string) (*Registration, error) {
	r, err := scanRegistration(s.db.QueryRowContext(ctx, s.q("SELECT "+regCols+" FROM registrations WHERE reg_id = ?"), regID))
	return r, wrap("get registration", err)
}

// CompleteRegistration gives a pending registration's node to the user who
// signed in for it, in one transaction: a node with that key of the same
// user is renewed (expiry set, name and addresses kept: a re-login); a new
// key becomes a new node (name, addresses). expiry is the node key's
// expiry (zero: never); approved false leaves the node waiting for
// ApproveNode. ErrNotFound for an unknown ID, ErrRegistrationExpired past
// its expiry, ErrConflict if already completed, ErrNodeKeyInUse if the key
// is another user's node.
func (s *Store) CompleteRegistration(ctx context.Context, regID string, userID int64, expiry time.Time, approved bool) (*Node, error) {
	var n *Node
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		r, err := scanRegistration(tx.QueryRowContext(ctx, s.q("SELECT "+regCols+" FROM registrations WHERE reg_id = ?"+s.forUpdate()), regID))
		if err != nil {
			return err
		}
		now := s.now()
		switch {
		case r.NodeID != 0 || r.UserID != 0:
			return fmt.Errorf("%w: registration already completed", ErrConflict)
		case !now.Before(r.Expiry):
			return ErrRegistrationExpired
		case r.NodeKey.IsZero():
			return fmt.Errorf("%w: registration's node key", ErrInvalid)
		}
		if err := s.registrationLock(ctx, tx); err != nil {
			return err
		}
		nodeKey := r.NodeKey.String()
		existing, err := scanNode(tx.QueryRowContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE node_key = ?"), nodeKey))
		switch {
		case err == nil && existing.UserID != userID:
			return ErrNodeKeyInUse
		case err == nil:
			if _, err := tx.ExecContext(ctx, s.q("UPDATE nodes SET expires_at = ?, interactive = TRUE WHERE id = ?"),
				tsOf(expiry), existing.ID); err != nil {
				return err
			}
			existing.Expiry, existing.Interactive = expiry, true
			n = existing
		case errors.Is(err, sql.ErrNoRows):
			name, v4, v6, err := s.newIdentity(ctx, tx, r.Hostname)
			if err != nil {
				return err
			}
			n = &Node{UserID: userID, NodeKey: r.NodeKey, Hostname: r.Hostname, Name: name, IPv4: v4, IPv6: v6,
				Endpoints: []string{}, Expiry: expiry, Created: now, Approved: approved, Interactive: true}
			if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO nodes (user_id, auth_key_id, node_key, hostname, name, ipv4, ipv6,
				endpoints, online, expires_at, ephemeral, created_at, tags, approved, interactive)
				VALUES (?, NULL, ?, ?, ?, ?, ?, '[]', FALSE, ?, FALSE, ?, '', ?, TRUE) RETURNING id`),
				userID, nodeKey, r.Hostname, name, v4.String(), v6.String(), tsOf(expiry), now.UnixNano(), approved).Scan(&n.ID); err != nil {
				return err
			}
		default:
			return err
		}
		_, err = tx.ExecContext(ctx, s.q("UPDATE registrations SET user_id = ?, node_id = ? WHERE reg_id = ?"), userID, n.ID, regID)
		return err
	})
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, ErrRegistrationExpired), errors.Is(err, ErrNodeKeyInUse), errors.Is(err, ErrAddressExhausted):
		return nil, fmt.Errorf("complete registration: %w", err)
	}
	return nil, wrap("complete registration", err)
}

// NodeApproved reports whether a node may be in the network: false for a
// node joined interactively in approval mode until ApproveNode.
func (s *Store) NodeApproved(ctx context.Context, id int64) (bool, error) {
	var ok bool
	err := s.db.QueryRowContext(ctx, s.q("SELECT approved FROM nodes WHERE id = ?"), id).Scan(&ok)
	return ok, wrap("node approved", err)
}

// ApproveNode lets a node waiting for approval into the network.
func (s *Store) ApproveNode(ctx context.Context, id int64) error {
	return s.exec(ctx, "approve node", "UPDATE nodes SET approved = TRUE WHERE id = ?", id)
}
