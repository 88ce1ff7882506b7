package store

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// sqliteFile is the SQLite database file a store opened, to tell whether
// it is still there: open connections keep reading and writing a file
// that was deleted or replaced, so a query alone would not notice that
// every later write is lost.
type sqliteFile struct {
	path string      // "" for PostgreSQL
	fi   os.FileInfo // the file as opened
}

func (f *sqliteFile) remember() error {
	if f.path == "" {
		return nil
	}
	fi, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	f.fi = fi
	return nil
}

// Ping checks that the database answers a query within ctx and, for
// SQLite, that its file is still the one opened. It is cheap enough for
// a readiness probe.
func (s *Store) Ping(ctx context.Context) error {
	if s.file.path != "" {
		fi, err := os.Stat(s.file.path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("store: database file %s is gone", s.file.path)
		case err != nil:
			return fmt.Errorf("store: %w", err)
		case !os.SameFile(fi, s.file.fi):
			return fmt.Errorf("store: database file %s was replaced", s.file.path)
		}
	}
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}
