// Package store owns the coordination server's persistent state: users,
// nodes (keys, DNS-safe names, addresses, endpoints, liveness, expiry),
// pre-auth keys and admin API keys, together with the schema migrations that
// create them and the allocation of each node's IPv4 and IPv6 address. It runs
// on embedded SQLite (modernc.org/sqlite, pure Go; WAL, foreign keys,
// busy_timeout 10000, every transaction BEGIN IMMEDIATE) or on PostgreSQL
// (pgx), with one logical schema and the same queries for both behind a small
// dialect layer. Secrets are never stored: keys are kept as a lookup prefix
// plus the SHA-256 of the whole key, compared in constant time. Anything that
// must be atomic — validating and consuming a pre-auth key, deriving a unique
// name, allocating addresses, inserting the node — happens in one transaction.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" database/sql driver
	"modernc.org/sqlite"
)

// Errors returned by the store; callers match them with errors.Is.
var (
	ErrNotFound         = errors.New("store: not found")
	ErrConflict         = errors.New("store: already exists")
	ErrAuthKeyInvalid   = errors.New("store: auth key unknown or invalid")
	ErrAuthKeyExpired   = errors.New("store: auth key expired")
	ErrAuthKeyUsed      = errors.New("store: one-off auth key already used")
	ErrNodeKeyInUse     = errors.New("store: node key registered to another user")
	ErrAddressExhausted = errors.New("store: address prefix exhausted")
	ErrInvalid          = errors.New("store: invalid argument")
)

// Default address prefixes. The IPv6 ULA /48 defaults to one generated at
// random on first open and then kept in the database.
var DefaultIPv4Prefix = netip.MustParsePrefix("100.64.0.0/10")

// Options configure Open. The zero value is valid.
type Options struct {
	IPv4Prefix netip.Prefix     // default DefaultIPv4Prefix
	IPv6Prefix netip.Prefix     // default: a random ULA /48, persisted per deployment
	Now        func() time.Time // clock, for tests; default time.Now
}

type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

// Store is the coordination server's database. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	dialect dialect
	dsn     string // PostgreSQL: for the dedicated connections of replicas.go
	v4, v6  netip.Prefix
	now     func() time.Time
	fakeNow bool       // Options.Now was given (tests): replicas.go uses it, not the database's clock
	file    sqliteFile // SQLite: the database file opened (health.go)
	// writeMu is SQLite's one-writer-at-a-time rule taken in Go: this
	// process's writers queue here, in order, instead of each holding a
	// pooled connection while SQLite's busy handler sleeps and retries,
	// which left readers waiting for a connection. PostgreSQL writers run
	// concurrently and do not take it.
	writeMu sync.Mutex
}

// lockWrite takes the SQLite writer lock (nothing on PostgreSQL) and
// returns its release.
func (s *Store) lockWrite() func() {
	if s.dialect == dialectPostgres {
		return func() {}
	}
	s.writeMu.Lock()
	return s.writeMu.Unlock
}

// Open opens (creating if needed) the database named by dsn and applies any
// pending migrations. dsn is "postgres://..." / "postgresql://..." for
// PostgreSQL, or "sqlite:PATH" or a plain file path for SQLite.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	s := &Store{now: opts.Now, v4: opts.IPv4Prefix, v6: opts.IPv6Prefix, fakeNow: opts.Now != nil}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s.dialect = dialectPostgres
		s.dsn = dsn
		s.db, err = sql.Open("pgx", dsn)
	default:
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" || strings.ContainsAny(path, "?#") {
			return nil, fmt.Errorf("%w: sqlite path %q", ErrInvalid, path)
		}
		s.dialect = dialectSQLite
		s.db, err = sql.Open("sqlite", "file:"+path+
			"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate")
		if err == nil {
			s.db.SetMaxOpenConns(8)
			s.file.path = path
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	if err := s.file.remember(); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.loadPrefixes(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// IPv4Prefix and IPv6Prefix are the prefixes node addresses come from.
func (s *Store) IPv4Prefix() netip.Prefix { return s.v4 }
func (s *Store) IPv6Prefix() netip.Prefix { return s.v6 }

// q rewrites the ?-placeholders of a query for the dialect.
func (s *Store) q(query string) string {
	if s.dialect != dialectPostgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// forUpdate is the row-locking suffix for a SELECT inside a write
// transaction (SQLite's BEGIN IMMEDIATE already holds the write lock).
func (s *Store) forUpdate() string {
	if s.dialect == dialectPostgres {
		return " FOR UPDATE"
	}
	return ""
}

// registrationLock serializes transactions that allocate names and
// addresses. On SQLite the IMMEDIATE transaction already does.
func (s *Store) registrationLock(ctx context.Context, tx *sql.Tx) error {
	if s.dialect != dialectPostgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7235601)")
	return err
}

// inTx runs fn in a write transaction, committing if it returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	defer s.lockWrite()()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// isUnique reports whether err is a unique-constraint violation.
func isUnique(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == 2067 || se.Code() == 1555 // CONSTRAINT_UNIQUE, CONSTRAINT_PRIMARYKEY
	}
	return false
}

// isForeignKey reports whether err is a foreign-key violation.
func isForeignKey(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23503"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == 787 || se.Code() == 1811 // CONSTRAINT_FOREIGNKEY; CONSTRAINT_TRIGGER (ON DELETE RESTRICT)
	}
	return false
}

// wrap maps driver errors to the store's errors, keeping the cause.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	case isUnique(err):
		return fmt.Errorf("%s: %w (%v)", op, ErrConflict, err)
	case isForeignKey(err):
		return fmt.Errorf("%s: %w: referenced or referencing row (%v)", op, ErrConflict, err)
	case !errors.Is(err, ErrUnavailable) && connectionLost(err):
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Times are stored as Unix nanoseconds; NULL means "never"/"unset".
func tsOf(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func timeOf(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64)
}

// exec runs a single-row update/delete and maps "no row" to ErrNotFound.
func (s *Store) exec(ctx context.Context, op, query string, args ...any) error {
	unlock := s.lockWrite()
	res, err := s.db.ExecContext(ctx, s.q(query), args...)
	unlock()
	if err != nil {
		return wrap(op, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}
