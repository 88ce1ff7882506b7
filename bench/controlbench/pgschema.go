package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" database/sql driver
)

// freshSchema creates a schema of its own for this run on the PostgreSQL
// server at dsn and returns a DSN whose search_path is it, and a function
// that drops it: runs never see each other's nodes, and replicas find one
// server key recorded, the run's.
func freshSchema(ctx context.Context, dsn string, seed uint64) (string, func(), error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	schema := fmt.Sprintf("controlbench_%d", seed%1_000_000_000)
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		db.Close()
		return "", nil, fmt.Errorf("postgres: create schema %s: %w", schema, err)
	}
	drop := func() {
		db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	}
	u, err := url.Parse(dsn)
	if err != nil {
		drop()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}
