package store

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
)

// The change log is how a coordination server follows the store without
// reloading it: every write to what the network maps are made of (nodes,
// a user's name, the DNS configuration, the policy) appends a row to the
// changes table, by triggers (migration 7) in the writing transaction, so
// no writer (this process, the admin API, another process, a hand-made
// SQL statement) can forget it. A reader keeps the sequence number of the
// last change it applied, asks for the rows after it (Changes) and
// re-reads only what they name.
//
// Sequence numbers grow with every change. On SQLite, where writers take
// turns, they also become visible in order. On PostgreSQL a transaction
// takes its number when it writes and shows it when it commits, so a
// reader may see 11 before 10: a missing number is either a transaction
// still in flight or one rolled back, and a reader keeps asking for it for
// a while (control/server's change follower). The log is pruned
// (PruneChanges); a reader that fell behind the pruned point has missed
// changes and must reload everything.

// Kinds of change.
const (
	ChangeNode   = "node"   // Ref: the ID of the node inserted, updated or deleted
	ChangeUser   = "user"   // Ref: the ID of the user renamed
	ChangeDNS    = "dns"    // the custom DNS configuration (records, zones, routes)
	ChangePolicy = "policy" // the access policy
	ChangeRelays = "relays" // the replicas' embedded relays (replica_relays.go)
)

// Change is one row of the change log.
type Change struct {
	Seq  int64
	Kind string // ChangeNode, ...
	Ref  int64  // what changed, for ChangeNode and ChangeUser; else 0
}

const prunedKey = "changes_pruned"

// Changes returns up to limit changes after seq after, in order, and the
// highest sequence number pruned from the log: a reader at after < pruned
// has missed changes.
func (s *Store) Changes(ctx context.Context, after int64, limit int) ([]Change, int64, error) {
	rows, err := s.db.QueryContext(ctx, s.q("SELECT seq, kind, ref FROM changes WHERE seq > ? ORDER BY seq LIMIT ?"), after, limit)
	if err != nil {
		return nil, 0, wrap("changes", err)
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		if err := rows.Scan(&c.Seq, &c.Kind, &c.Ref); err != nil {
			return nil, 0, wrap("changes", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, wrap("changes", err)
	}
	// The pruned mark is read after the rows: a prune in between makes the
	// reader reload, never miss a change.
	pruned, err := s.prunedChanges(ctx, s.db)
	return out, pruned, err
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) prunedChanges(ctx context.Context, q queryer) (int64, error) {
	var v string
	err := q.QueryRowContext(ctx, s.q("SELECT value FROM settings WHERE key = ?"), prunedKey).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("changes", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, wrap("changes: pruned mark", err)
	}
	return n, nil
}

// LastChange is the highest sequence number in the log (or pruned from
// it); 0 if there was no change yet.
func (s *Store) LastChange(ctx context.Context) (int64, error) {
	var last sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT MAX(seq) FROM changes").Scan(&last); err != nil {
		return 0, wrap("last change", err)
	}
	pruned, err := s.prunedChanges(ctx, s.db)
	if err != nil {
		return 0, err
	}
	return max(last.Int64, pruned), nil
}

// PruneChanges deletes the changes up to seq upTo and records it as the
// pruned mark (which never moves back).
func (s *Store) PruneChanges(ctx context.Context, upTo int64) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if s.dialect == dialectPostgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7235602)"); err != nil {
				return err
			}
		}
		pruned, err := s.prunedChanges(ctx, tx)
		if err != nil || upTo <= pruned {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q("DELETE FROM changes WHERE seq <= ?"), upTo); err != nil {
			return err
		}
		v := strconv.FormatInt(upTo, 10)
		res, err := tx.ExecContext(ctx, s.q("UPDATE settings SET value = ? WHERE key = ?"), v, prunedKey)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			_, err = tx.ExecContext(ctx, s.q("INSERT INTO settings (key, value) VALUES (?, ?)"), prunedKey, v)
			return err
		}
		return err
	})
	return wrap("prune changes", err)
}

// GetNodes returns the nodes among ids that exist, in no particular order.
func (s *Store) GetNodes(ctx context.Context, ids []int64) ([]*Node, error) {
	const batch = 500
	var out []*Node
	for len(ids) > 0 {
		part := ids[:min(len(ids), batch)]
		ids = ids[len(part):]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		marks := strings.TrimSuffix(strings.Repeat("?,", len(part)), ",")
		rows, err := s.db.QueryContext(ctx, s.q("SELECT "+nodeCols+" FROM nodes WHERE id IN ("+marks+")"), args...)
		if err != nil {
			return nil, wrap("get nodes", err)
		}
		for rows.Next() {
			n, err := scanNode(rows)
			if err != nil {
				rows.Close()
				return nil, wrap("get nodes", err)
			}
			out = append(out, n)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, wrap("get nodes", err)
		}
	}
	return out, nil
}
