package store

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Hostinfo is what a node reports about itself on each map stream.
type Hostinfo struct {
	OS      string // runtime.GOOS, e.g. "linux"
	Version string // Warren's version
	Updated time.Time
}

// MaxHostinfoField bounds each reported field.
const MaxHostinfoField = 64

// checkHostinfoField refuses a field that is too long or not printable
// (admins see it in their terminals and browsers).
func checkHostinfoField(what, v string) error {
	if len(v) > MaxHostinfoField {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, MaxHostinfoField)
	}
	if strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%w: %s has non-printable characters", ErrInvalid, what)
	}
	return nil
}

// SetHostinfo records what node id reported about itself.
func (s *Store) SetHostinfo(ctx context.Context, id int64, h Hostinfo) error {
	if err := checkHostinfoField("os", h.OS); err != nil {
		return err
	}
	if err := checkHostinfoField("version", h.Version); err != nil {
		return err
	}
	if h.Updated.IsZero() {
		h.Updated = s.now()
	}
	return s.exec(ctx, "set hostinfo", `INSERT INTO node_hostinfo (node_id, os, version, updated_at)
		SELECT id, ?, ?, ? FROM nodes WHERE id = ?
		ON CONFLICT (node_id) DO UPDATE SET os = excluded.os, version = excluded.version, updated_at = excluded.updated_at`,
		h.OS, h.Version, h.Updated.UnixNano(), id)
}

// ListHostinfo returns what every node that reported reported, by node ID.
func (s *Store) ListHostinfo(ctx context.Context) (map[int64]Hostinfo, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT node_id, os, version, updated_at FROM node_hostinfo")
	if err != nil {
		return nil, wrap("list hostinfo", err)
	}
	defer rows.Close()
	out := map[int64]Hostinfo{}
	for rows.Next() {
		var id, upd int64
		var h Hostinfo
		if err := rows.Scan(&id, &h.OS, &h.Version, &upd); err != nil {
			return nil, wrap("list hostinfo", err)
		}
		h.Updated = time.Unix(0, upd)
		out[id] = h
	}
	return out, wrap("list hostinfo", rows.Err())
}
