package store

import (
	"context"
	"database/sql"
)

// Peer relays. A node offers a UDP port to relay on for others (warren up
// --relay-server-port); an admin approves the node as a peer relay. Peers
// are told about approved nodes offering a port, as the policy allows
// (package policy, peerRelays). Approving a node that offers no port (yet)
// is a pre-approval, as for routes.

// IsPeerRelay reports whether the node serves as a peer relay now: it
// offers a port and an admin approved it.
func (n *Node) IsPeerRelay() bool { return n.RelayPort != 0 && n.RelayApproved }

// SetRelayPort records the UDP port a node offers to relay on (0: none).
func (s *Store) SetRelayPort(ctx context.Context, id int64, port uint16) error {
	return s.exec(ctx, "set relay port", "UPDATE nodes SET relay_port = ? WHERE id = ?", int64(port), id)
}

// ApproveRelay approves (or with false, unapproves) a node as a peer
// relay and returns the node as stored.
func (s *Store) ApproveRelay(ctx context.Context, id int64, approve bool) (*Node, error) {
	var n *Node
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q("UPDATE nodes SET relay_approved = ? WHERE id = ?"), approve, id); err != nil {
			return err
		}
		var err error
		n, err = scanNode(tx.QueryRowContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE id = ?"), id))
		return err
	})
	if err != nil {
		return nil, wrap("approve relay", err)
	}
	return n, nil
}
