package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestUnavailableErrors: wrap marks the database being out of reach
// (no connection, a broken one, the server shutting down or starting up)
// ErrUnavailable, keeping the cause, and nothing else.
func TestUnavailableErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "dial", Net: "unix", Err: syscall.ENOENT}, true},
		{&pgconn.PgError{Code: "57P01"}, true}, // admin shutdown (a fast stop)
		{&pgconn.PgError{Code: "57P03"}, true}, // the database system is starting up
		{&pgconn.PgError{Code: "08006"}, true}, // connection failure
		{fmt.Errorf("begin: %w", &net.OpError{Op: "write", Net: "unix", Err: syscall.EPIPE}), true},
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "22P02"}, false},
		{sql.ErrNoRows, false},
		{context.Canceled, false},
		{errors.New("something else"), false},
	} {
		err := wrap("op", c.err)
		if got := errors.Is(err, ErrUnavailable); got != c.want || IsUnavailable(c.err) != c.want {
			t.Errorf("%v: unavailable %v, want %v", c.err, got, c.want)
		}
		if c.want && !errors.Is(err, c.err) {
			t.Errorf("%v: the cause is lost: %v", c.err, err)
		}
	}
}
