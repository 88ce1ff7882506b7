// Package storetest gives tests the databases the store runs on: a fresh
// SQLite file always, and a fresh PostgreSQL schema (dropped when the test
// ends) when WARREN_TEST_POSTGRES names a server — with
// WARREN_REQUIRE_POSTGRES=1 (as in CI) a missing server fails the test
// instead of skipping the PostgreSQL run. It opens no store itself, so the
// store's own tests use it too.
package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" database/sql driver
)

// Environment variables read by Backends.
const (
	EnvPostgres        = "WARREN_TEST_POSTGRES"
	EnvRequirePostgres = "WARREN_REQUIRE_POSTGRES"
)

// Backend makes fresh DSNs of one kind.
type Backend struct {
	Name string
	DSN  func(t testing.TB) string
}

// Backends returns SQLite, and PostgreSQL when EnvPostgres is set.
func Backends(t testing.TB) []Backend {
	t.Helper()
	bs := []Backend{{"sqlite", func(t testing.TB) string {
		return "sqlite:" + filepath.Join(t.TempDir(), "warren.db")
	}}}
	pg := os.Getenv(EnvPostgres)
	if pg == "" {
		if os.Getenv(EnvRequirePostgres) == "1" {
			t.Fatalf("%s=1 but %s is unset", EnvRequirePostgres, EnvPostgres)
		}
		t.Logf("%s unset: PostgreSQL backend skipped", EnvPostgres)
		return bs
	}
	return append(bs, Backend{"postgres", func(t testing.TB) string { return Schema(t, pg) }})
}

// PostgresDSN returns a fresh PostgreSQL schema's DSN (as Backends'
// "postgres" one), and skips the test when EnvPostgres is unset (fails it
// under EnvRequirePostgres).
func PostgresDSN(t testing.TB) string {
	t.Helper()
	for _, b := range Backends(t) {
		if b.Name == "postgres" {
			return b.DSN(t)
		}
	}
	t.Skipf("%s unset: this test needs PostgreSQL", EnvPostgres)
	return ""
}

var schemaSeq atomic.Int64

// Schema creates a fresh schema on the server at dsn, dropped when the
// test ends, and returns a DSN whose search_path is it.
func Schema(t testing.TB, dsn string) string {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := fmt.Sprintf("t_%d_%d", os.Getpid(), schemaSeq.Add(1))
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		db.Close()
		t.Fatalf("postgres at %s: %v", EnvPostgres, err)
	}
	t.Cleanup(func() {
		db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
