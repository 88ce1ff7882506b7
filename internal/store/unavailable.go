package store

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnavailable is a store operation that failed because the database
// could not be reached or went away under it (PostgreSQL stopped,
// restarting or unreachable): nothing the caller did was wrong, and the
// same call may succeed once the database is back. A transaction that
// failed so was not committed (except, rarely, one whose COMMIT was sent
// and whose answer was lost).
var ErrUnavailable = errors.New("store: the database is unreachable")

// IsUnavailable reports whether err is the database being out of reach
// (ErrUnavailable, or a driver error that means it).
func IsUnavailable(err error) bool {
	return err != nil && (errors.Is(err, ErrUnavailable) || connectionLost(err))
}

// connectionLost reports whether a driver error means the database is out
// of reach: no connection could be made, the connection broke, or the
// server is shutting down or starting up.
func connectionLost(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	var ne net.Error
	switch {
	case errors.As(err, &pe):
		// 08: connection exception; 57P01..57P03: admin shutdown,
		// crash shutdown, cannot connect now (starting up).
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.ErrUnexpectedEOF), pgconn.SafeToRetry(err):
		return true
	}
	return false
}
