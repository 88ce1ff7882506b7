package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/internal/routeprefix"
)

// MaxRoutes bounds the advertised or approved routes of one node.
const MaxRoutes = routeprefix.Max

// Routes. A node advertises prefixes it can route (its subnets, or
// 0.0.0.0/0 and ::/0 for an exit node); an admin approves prefixes per
// node. Peers are given the intersection. Approving a prefix the node does
// not advertise (yet) is allowed: it is a pre-approval that takes effect
// when the node advertises it, and it stays listed as approved either way.

// normRoutes checks prefixes (package routeprefix) and returns them
// sorted without duplicates; nil for none.
func normRoutes(routes []netip.Prefix) ([]netip.Prefix, error) {
	out, err := routeprefix.Normalize(routes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return out, nil
}

func joinRoutes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func splitRoutes(s string) []netip.Prefix {
	if s == "" {
		return nil
	}
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// EnabledRoutes is what peers get: the approved routes the node
// advertises, sorted.
func (n *Node) EnabledRoutes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range n.AdvertisedRoutes {
		if slices.Contains(n.ApprovedRoutes, p) {
			out = append(out, p)
		}
	}
	return out
}

// SetAdvertisedRoutes records the routes a node advertises.
func (s *Store) SetAdvertisedRoutes(ctx context.Context, id int64, routes []netip.Prefix) error {
	rs, err := normRoutes(routes)
	if err != nil {
		return fmt.Errorf("set advertised routes: %w", err)
	}
	return s.exec(ctx, "set advertised routes", "UPDATE nodes SET advertised_routes = ? WHERE id = ?", joinRoutes(rs), id)
}

// ApproveRoutes adds approve to and then removes unapprove from a node's
// approved routes, in one transaction, and returns the node as stored.
func (s *Store) ApproveRoutes(ctx context.Context, id int64, approve, unapprove []netip.Prefix) (*Node, error) {
	add, err := normRoutes(approve)
	if err != nil {
		return nil, fmt.Errorf("approve routes: %w", err)
	}
	del, err := normRoutes(unapprove)
	if err != nil {
		return nil, fmt.Errorf("approve routes: %w", err)
	}
	var n *Node
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		cur, err := scanNode(tx.QueryRowContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE id = ?"+s.forUpdate()), id))
		if err != nil {
			return err
		}
		next := append(slices.Clone(cur.ApprovedRoutes), add...)
		next = slices.DeleteFunc(next, func(p netip.Prefix) bool { return slices.Contains(del, p) })
		if next, err = normRoutes(next); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q("UPDATE nodes SET approved_routes = ? WHERE id = ?"), joinRoutes(next), id); err != nil {
			return err
		}
		cur.ApprovedRoutes = next
		n = cur
		return nil
	})
	if err != nil {
		return nil, wrap("approve routes", err)
	}
	return n, nil
}
