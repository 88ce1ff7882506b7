package store

import (
	"context"
	"time"
)

// AuditEntry is one line of the audit log: an admin action or a sign-in.
type AuditEntry struct {
	ID     int64
	At     time.Time // set by RecordAudit when zero
	Actor  string    // who: "apikey:PREFIX", "user:NAME (EMAIL)", "oidc:EMAIL"...
	Action string    // what: "node.delete", "user.create", "signin"...
	Target string    // on what: "node 7", "user alice"; "" if none
	Detail string    // further facts (the new name, the refusal's reason)
	Source string    // from where: the client's address
	OK     bool      // false: the action or sign-in was refused
}

// auditField bounds a field so a client cannot bloat the log.
func auditField(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// RecordAudit appends an entry to the audit log.
func (s *Store) RecordAudit(ctx context.Context, e AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	unlock := s.lockWrite()
	defer unlock()
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO audit_log (at, actor, action, target, detail, source, ok)
		VALUES (?, ?, ?, ?, ?, ?, ?)`), e.At.UnixNano(), auditField(e.Actor, 300), auditField(e.Action, 100),
		auditField(e.Target, 300), auditField(e.Detail, 1000), auditField(e.Source, 100), e.OK)
	return wrap("record audit", err)
}

// ListAudit returns the entries at or after since (zero: all), oldest
// first, at most limit of the newest (0: no limit).
func (s *Store) ListAudit(ctx context.Context, since time.Time, limit int) ([]*AuditEntry, error) {
	q := "SELECT id, at, actor, action, target, detail, source, ok FROM audit_log WHERE at >= ? ORDER BY id DESC"
	args := []any{since.UnixNano()}
	if since.IsZero() {
		args[0] = int64(0)
	}
	if limit > 0 {
		q += " LIMIT ?"
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, wrap("list audit", err)
	}
	defer rows.Close()
	var out []*AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.Source, &e.OK); err != nil {
			return nil, wrap("list audit", err)
		}
		e.At = time.Unix(0, at)
		out = append(out, &e)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, wrap("list audit", rows.Err())
}

// PruneAudit deletes the audit entries older than before and returns how
// many it deleted.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	unlock := s.lockWrite()
	defer unlock()
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM audit_log WHERE at < ?`), before.UnixNano())
	if err != nil {
		return 0, wrap("prune audit", err)
	}
	n, err := res.RowsAffected()
	return n, wrap("prune audit", err)
}
