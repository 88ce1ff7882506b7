package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Identity is a user's account at an OIDC identity provider. A person is
// recognized by (Issuer, Subject) only: the email is kept for display and
// for linking a pre-created user on first sign-in, never as the key.
type Identity struct {
	ID        int64
	UserID    int64
	Issuer    string
	Subject   string
	Email     string
	Created   time.Time
	LastLogin time.Time
}

// SignInOptions say how SignIn finds or creates the user.
type SignInOptions struct {
	// Create allows creating a user on the first sign-in of an unknown
	// identity; without it the identity must already be linked, or a user
	// named exactly Email must exist (created by an admin), which it is
	// then linked to.
	Create bool
	// Name is the name wanted for a new user (e.g. the email); a number is
	// appended if it is taken.
	Name string
}

// SignIn returns the user of the identity (issuer, subject), creating the
// identity (and, with o.Create, the user) on first sign-in, and records
// the sign-in time and current email. ErrNotFound if the identity is unknown
// and no user may be created or linked.
func (s *Store) SignIn(ctx context.Context, issuer, subject, email string, o SignInOptions) (*User, error) {
	if issuer == "" || subject == "" || len(subject) > 255 || len(email) > 320 {
		return nil, fmt.Errorf("sign in: %w: issuer and subject are required", ErrInvalid)
	}
	var u *User
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := s.now().UnixNano()
		var uid int64
		err := tx.QueryRowContext(ctx, s.q("SELECT user_id FROM user_identities WHERE issuer = ? AND subject = ?"+s.forUpdate()),
			issuer, subject).Scan(&uid)
		switch {
		case err == nil:
			if _, err := tx.ExecContext(ctx, s.q("UPDATE user_identities SET email = ?, last_login_at = ? WHERE issuer = ? AND subject = ?"),
				email, now, issuer, subject); err != nil {
				return err
			}
		case errors.Is(err, sql.ErrNoRows):
			// An admin may have created the user by the person's email;
			// link it, unless another identity already holds it.
			var linked int
			lerr := tx.QueryRowContext(ctx, s.q(`SELECT u.id, (SELECT COUNT(*) FROM user_identities i WHERE i.user_id = u.id)
				FROM users u WHERE u.name = ?`), email).Scan(&uid, &linked)
			switch {
			case lerr == nil && linked == 0 && email != "":
			case !o.Create:
				return fmt.Errorf("sign in: %w: no user for this identity", ErrNotFound)
			default:
				name, err := s.freeUserName(ctx, tx, o.Name)
				if err != nil {
					return err
				}
				if err := tx.QueryRowContext(ctx, s.q("INSERT INTO users (name, created_at) VALUES (?, ?) RETURNING id"),
					name, now).Scan(&uid); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO user_identities (user_id, issuer, subject, email, created_at, last_login_at)
				VALUES (?, ?, ?, ?, ?, ?)`), uid, issuer, subject, email, now, now); err != nil {
				return err
			}
		default:
			return err
		}
		var err2 error
		u, err2 = scanUser(tx.QueryRowContext(ctx, s.q("SELECT id, name, created_at FROM users WHERE id = ?"), uid))
		return err2
	})
	return u, wrap("sign in", err)
}

// freeUserName returns want (or "user" if empty), with "-2", "-3"... added
// while the name is taken.
func (s *Store) freeUserName(ctx context.Context, tx *sql.Tx, want string) (string, error) {
	if want == "" {
		want = "user"
	}
	if len(want) > 240 {
		want = want[:240]
	}
	for i := 1; i < 1000; i++ {
		name := want
		if i > 1 {
			name = want + "-" + strconv.Itoa(i)
		}
		var n int
		if err := tx.QueryRowContext(ctx, s.q("SELECT COUNT(*) FROM users WHERE name = ?"), name).Scan(&n); err != nil {
			return "", err
		}
		if n == 0 {
			return name, nil
		}
	}
	return "", fmt.Errorf("%w: no free user name for %q", ErrConflict, want)
}

// ListIdentities returns the identities linked to a user (0: all users).
func (s *Store) ListIdentities(ctx context.Context, userID int64) ([]*Identity, error) {
	q := "SELECT id, user_id, issuer, subject, email, created_at, last_login_at FROM user_identities"
	var args []any
	if userID != 0 {
		q += " WHERE user_id = ?"
		args = append(args, userID)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+" ORDER BY id"), args...)
	if err != nil {
		return nil, wrap("list identities", err)
	}
	defer rows.Close()
	var out []*Identity
	for rows.Next() {
		var i Identity
		var c, l int64
		if err := rows.Scan(&i.ID, &i.UserID, &i.Issuer, &i.Subject, &i.Email, &c, &l); err != nil {
			return nil, wrap("list identities", err)
		}
		i.Created, i.LastLogin = time.Unix(0, c), time.Unix(0, l)
		out = append(out, &i)
	}
	return out, wrap("list identities", rows.Err())
}

// WebSession is a signed-in person's browser session.
type WebSession struct {
	ID      int64
	UserID  int64
	Email   string
	Admin   bool
	Expiry  time.Time
	Created time.Time
}

// sessionPrefix marks a web session token.
const sessionPrefix = "wses_"

// CreateWebSession starts a browser session for a user that lasts ttl and
// returns its secret token (for the cookie; only its hash is stored).
func (s *Store) CreateWebSession(ctx context.Context, userID int64, email string, admin bool, ttl time.Duration) (string, *WebSession, error) {
	var b [32]byte
	rand.Read(b[:])
	token := sessionPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(token))
	now := s.now()
	ws := &WebSession{UserID: userID, Email: email, Admin: admin, Expiry: now.Add(ttl), Created: now}
	unlock := s.lockWrite()
	err := s.db.QueryRowContext(ctx, s.q(`INSERT INTO web_sessions (hash, user_id, email, admin, expires_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`), h[:], userID, email, admin, ws.Expiry.UnixNano(), now.UnixNano()).Scan(&ws.ID)
	unlock()
	if err != nil {
		return "", nil, wrap("create web session", err)
	}
	return token, ws, nil
}

// WebSessionByToken returns the live session of a token; ErrNotFound if
// it is unknown, malformed or expired.
func (s *Store) WebSessionByToken(ctx context.Context, token string) (*WebSession, error) {
	if !strings.HasPrefix(token, sessionPrefix) || len(token) > 100 {
		return nil, fmt.Errorf("web session: %w", ErrNotFound)
	}
	h := sha256.Sum256([]byte(token))
	var ws WebSession
	var exp, c int64
	err := s.db.QueryRowContext(ctx, s.q("SELECT id, user_id, email, admin, expires_at, created_at FROM web_sessions WHERE hash = ?"),
		h[:]).Scan(&ws.ID, &ws.UserID, &ws.Email, &ws.Admin, &exp, &c)
	if err != nil {
		return nil, wrap("web session", err)
	}
	ws.Expiry, ws.Created = time.Unix(0, exp), time.Unix(0, c)
	if !s.now().Before(ws.Expiry) {
		return nil, fmt.Errorf("web session: expired: %w", ErrNotFound)
	}
	return &ws, nil
}

// DeleteWebSession ends a session (sign-out) by its token.
func (s *Store) DeleteWebSession(ctx context.Context, token string) error {
	h := sha256.Sum256([]byte(token))
	return s.exec(ctx, "delete web session", "DELETE FROM web_sessions WHERE hash = ?", h[:])
}

// DeleteExpiredWebSessions removes sessions past their expiry.
func (s *Store) DeleteExpiredWebSessions(ctx context.Context) error {
	unlock := s.lockWrite()
	defer unlock()
	_, err := s.db.ExecContext(ctx, s.q("DELETE FROM web_sessions WHERE expires_at <= ?"), s.now().UnixNano())
	return wrap("delete expired web sessions", err)
}
