package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// StoredPolicy is one accepted version of the access policy.
type StoredPolicy struct {
	ID      int64  // increases with each version; 0: never set
	Text    string // the HuJSON text as uploaded; "" means no policy
	Created time.Time
}

// PolicyHistory is how many versions SetPolicy keeps.
const PolicyHistory = 10

// Policy returns the policy in force (the newest version). With none ever
// set it returns a zero StoredPolicy (ID 0, empty text) and no error.
func (s *Store) Policy(ctx context.Context) (*StoredPolicy, error) {
	var p StoredPolicy
	var created int64
	err := s.db.QueryRowContext(ctx, "SELECT id, text, created_at FROM policies ORDER BY id DESC LIMIT 1").Scan(&p.ID, &p.Text, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return &StoredPolicy{}, nil
	}
	if err != nil {
		return nil, wrap("get policy", err)
	}
	p.Created = time.Unix(0, created)
	return &p, nil
}

// SetPolicy stores a new version of the policy ("" removes it: allow all)
// and keeps the last PolicyHistory versions. The caller has checked the
// text (policy.Check): the store keeps only accepted policies.
func (s *Store) SetPolicy(ctx context.Context, text string) (*StoredPolicy, error) {
	p := &StoredPolicy{Text: text, Created: s.now()}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, s.q("INSERT INTO policies (text, created_at) VALUES (?, ?) RETURNING id"),
			text, p.Created.UnixNano()).Scan(&p.ID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q("DELETE FROM policies WHERE id <= ?"), p.ID-PolicyHistory)
		return err
	})
	if err != nil {
		return nil, wrap("set policy", err)
	}
	return p, nil
}
