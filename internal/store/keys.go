package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// User is an owner of nodes and pre-auth keys.
type User struct {
	ID      int64
	Name    string
	Created time.Time
}

// PreAuthKey is a stored pre-auth key; the secret itself is never stored.
type PreAuthKey struct {
	ID        int64
	UserID    int64
	Prefix    string // public lookup ID, shown in listings
	Reusable  bool
	Ephemeral bool
	Expiry    time.Time // zero: never
	UsedCount int64
	UsedAt    time.Time // last use; zero if never used
	Created   time.Time
	Tags      []string // nodes joining with it carry these tags (sorted)
}

// APIKey is a stored admin API key; the secret itself is never stored.
type APIKey struct {
	ID       int64
	Prefix   string
	Expiry   time.Time
	LastUsed time.Time
	Created  time.Time
	// Scope is what the key may do: ScopeAdmin everything, ScopeRelay
	// only list node keys for a standalone relay (package admin enforces
	// it).
	Scope string
}

// API key scopes.
const (
	ScopeAdmin = ""
	ScopeRelay = "relay"
)

// Key formats: "<kind>_<prefix>_<secret>" with a 12-hex-digit prefix used for
// lookup and a 32-byte random secret; the store keeps SHA-256 of the key.
const (
	authKeyKind  = "wkey"
	apiKeyKind   = "wapi" // ScopeAdmin
	relayKeyKind = "wrly" // ScopeRelay
)

func newSecret(kind string) (key, prefix string, hash []byte) {
	var p [6]byte
	var sec [32]byte
	rand.Read(p[:])
	rand.Read(sec[:])
	prefix = hex.EncodeToString(p[:])
	key = kind + "_" + prefix + "_" + hex.EncodeToString(sec[:])
	h := sha256.Sum256([]byte(key))
	return key, prefix, h[:]
}

// splitKey returns the lookup prefix of a well-formed key.
func splitKey(kind, key string) (prefix string, ok bool) {
	parts := strings.Split(key, "_")
	if len(parts) != 3 || parts[0] != kind || len(parts[1]) != 12 || len(parts[2]) != 64 {
		return "", false
	}
	return parts[1], true
}

func keyMatches(key string, hash []byte) bool {
	h := sha256.Sum256([]byte(key))
	return subtle.ConstantTimeCompare(h[:], hash) == 1
}

// CreateUser adds a user; ErrConflict if the name is taken.
func (s *Store) CreateUser(ctx context.Context, name string) (*User, error) {
	if name == "" || len(name) > 255 {
		return nil, fmt.Errorf("create user: %w: name must be 1..255 bytes", ErrInvalid)
	}
	u := &User{Name: name, Created: s.now()}
	err := s.db.QueryRowContext(ctx, s.q("INSERT INTO users (name, created_at) VALUES (?, ?) RETURNING id"),
		name, u.Created.UnixNano()).Scan(&u.ID)
	return u, wrap("create user", err)
}

func scanUser(sc interface{ Scan(...any) error }) (*User, error) {
	var u User
	var created int64
	if err := sc.Scan(&u.ID, &u.Name, &created); err != nil {
		return nil, err
	}
	u.Created = time.Unix(0, created)
	return &u, nil
}

// GetUser returns a user by ID.
func (s *Store) GetUser(ctx context.Context, id int64) (*User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q("SELECT id, name, created_at FROM users WHERE id = ?"), id))
	return u, wrap("get user", err)
}

// GetUserByName returns a user by name.
func (s *Store) GetUserByName(ctx context.Context, name string) (*User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q("SELECT id, name, created_at FROM users WHERE name = ?"), name))
	return u, wrap("get user", err)
}

// ListUsers returns all users ordered by ID.
func (s *Store) ListUsers(ctx context.Context) ([]*User, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, name, created_at FROM users ORDER BY id")
	if err != nil {
		return nil, wrap("list users", err)
	}
	defer rows.Close()
	var out []*User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, wrap("list users", err)
		}
		out = append(out, u)
	}
	return out, wrap("list users", rows.Err())
}

// RenameUser renames a user; ErrConflict if the new name is taken.
func (s *Store) RenameUser(ctx context.Context, id int64, name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("rename user: %w: name must be 1..255 bytes", ErrInvalid)
	}
	return s.exec(ctx, "rename user", "UPDATE users SET name = ? WHERE id = ?", name, id)
}

// DeleteUser deletes a user and its pre-auth keys; ErrConflict while the
// user still owns nodes.
func (s *Store) DeleteUser(ctx context.Context, id int64) error {
	return s.exec(ctx, "delete user", "DELETE FROM users WHERE id = ?", id)
}

// PreAuthKeyOptions describe a new pre-auth key.
type PreAuthKeyOptions struct {
	Reusable  bool
	Ephemeral bool      // nodes joining with it are ephemeral
	Expiry    time.Time // zero: never expires
	// Tags are given to nodes joining with the key ("tag:NAME"); the
	// caller checks that the key's user may use them (tags.go).
	Tags []string
}

// CreatePreAuthKey creates a key for a user and returns its secret, which is
// shown once and never stored.
func (s *Store) CreatePreAuthKey(ctx context.Context, userID int64, o PreAuthKeyOptions) (string, *PreAuthKey, error) {
	tags, err := normTags(o.Tags)
	if err != nil {
		return "", nil, fmt.Errorf("create auth key: %w", err)
	}
	key, prefix, hash := newSecret(authKeyKind)
	k := &PreAuthKey{UserID: userID, Prefix: prefix, Reusable: o.Reusable, Ephemeral: o.Ephemeral, Expiry: o.Expiry, Created: s.now(), Tags: tags}
	err = s.db.QueryRowContext(ctx, s.q(`INSERT INTO preauth_keys
		(user_id, prefix, hash, reusable, ephemeral, expires_at, created_at, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		userID, prefix, hash, o.Reusable, o.Ephemeral, tsOf(o.Expiry), k.Created.UnixNano(), joinTags(tags)).Scan(&k.ID)
	if isForeignKey(err) {
		return "", nil, fmt.Errorf("create auth key: user %d: %w", userID, ErrNotFound)
	}
	if err != nil {
		return "", nil, wrap("create auth key", err)
	}
	return key, k, nil
}

const preAuthCols = "id, user_id, prefix, reusable, ephemeral, expires_at, used_count, used_at, created_at, hash, tags"

func scanPreAuthKey(sc interface{ Scan(...any) error }) (*PreAuthKey, []byte, error) {
	var k PreAuthKey
	var exp, used sql.NullInt64
	var created int64
	var hash []byte
	var tags string
	if err := sc.Scan(&k.ID, &k.UserID, &k.Prefix, &k.Reusable, &k.Ephemeral, &exp, &k.UsedCount, &used, &created, &hash, &tags); err != nil {
		return nil, nil, err
	}
	k.Tags = splitTags(tags)
	k.Expiry, k.UsedAt, k.Created = timeOf(exp), timeOf(used), time.Unix(0, created)
	return &k, hash, nil
}

// ListPreAuthKeys returns the keys of one user (userID > 0) or of all users.
func (s *Store) ListPreAuthKeys(ctx context.Context, userID int64) ([]*PreAuthKey, error) {
	rows, err := s.db.QueryContext(ctx, s.q("SELECT "+preAuthCols+" FROM preauth_keys WHERE ? = 0 OR user_id = ? ORDER BY id"), userID, userID)
	if err != nil {
		return nil, wrap("list auth keys", err)
	}
	defer rows.Close()
	var out []*PreAuthKey
	for rows.Next() {
		k, _, err := scanPreAuthKey(rows)
		if err != nil {
			return nil, wrap("list auth keys", err)
		}
		out = append(out, k)
	}
	return out, wrap("list auth keys", rows.Err())
}

// ExpirePreAuthKey makes a key unusable from now on.
func (s *Store) ExpirePreAuthKey(ctx context.Context, id int64) error {
	return s.exec(ctx, "expire auth key", "UPDATE preauth_keys SET expires_at = ? WHERE id = ?", s.now().UnixNano(), id)
}

// DeletePreAuthKey deletes a key; nodes that joined with it stay.
func (s *Store) DeletePreAuthKey(ctx context.Context, id int64) error {
	return s.exec(ctx, "delete auth key", "DELETE FROM preauth_keys WHERE id = ?", id)
}

// lockPreAuthKey looks a key up inside tx, locking its row, and checks the
// secret and the expiry (but not one-off use, which RegisterNode decides).
func (s *Store) lockPreAuthKey(ctx context.Context, tx *sql.Tx, key string) (*PreAuthKey, error) {
	prefix, ok := splitKey(authKeyKind, key)
	if !ok {
		return nil, ErrAuthKeyInvalid
	}
	k, hash, err := scanPreAuthKey(tx.QueryRowContext(ctx, s.q("SELECT "+preAuthCols+" FROM preauth_keys WHERE prefix = ?"+s.forUpdate()), prefix))
	if err == sql.ErrNoRows {
		return nil, ErrAuthKeyInvalid
	}
	if err != nil {
		return nil, err
	}
	if !keyMatches(key, hash) {
		return nil, ErrAuthKeyInvalid
	}
	if !k.Expiry.IsZero() && !s.now().Before(k.Expiry) {
		return nil, ErrAuthKeyExpired
	}
	return k, nil
}

// CreateAPIKey creates an admin API key and returns its secret, shown once.
func (s *Store) CreateAPIKey(ctx context.Context, expiry time.Time) (string, *APIKey, error) {
	return s.CreateScopedAPIKey(ctx, ScopeAdmin, expiry)
}

// CreateScopedAPIKey creates an API key with a scope (ScopeAdmin: wapi_...,
// ScopeRelay: wrly_...) and returns its secret, shown once.
func (s *Store) CreateScopedAPIKey(ctx context.Context, scope string, expiry time.Time) (string, *APIKey, error) {
	kind := apiKeyKind
	switch scope {
	case ScopeAdmin:
	case ScopeRelay:
		kind = relayKeyKind
	default:
		return "", nil, fmt.Errorf("create api key: %w: unknown scope %q (want %q or %q)", ErrInvalid, scope, "admin", ScopeRelay)
	}
	key, prefix, hash := newSecret(kind)
	k := &APIKey{Prefix: prefix, Expiry: expiry, Created: s.now(), Scope: scope}
	err := s.db.QueryRowContext(ctx, s.q("INSERT INTO api_keys (prefix, hash, expires_at, created_at, scope) VALUES (?, ?, ?, ?, ?) RETURNING id"),
		prefix, hash, tsOf(expiry), k.Created.UnixNano(), scope).Scan(&k.ID)
	if err != nil {
		return "", nil, wrap("create api key", err)
	}
	return key, k, nil
}

const apiKeyCols = "id, prefix, expires_at, last_used_at, created_at, hash, scope"

func scanAPIKey(sc interface{ Scan(...any) error }) (*APIKey, []byte, error) {
	var k APIKey
	var exp, used sql.NullInt64
	var created int64
	var hash []byte
	if err := sc.Scan(&k.ID, &k.Prefix, &exp, &used, &created, &hash, &k.Scope); err != nil {
		return nil, nil, err
	}
	k.Expiry, k.LastUsed, k.Created = timeOf(exp), timeOf(used), time.Unix(0, created)
	return &k, hash, nil
}

// ValidateAPIKey checks an API key of any scope (format, secret in
// constant time, expiry) and records its use; the caller checks the
// returned key's Scope. Any failure is ErrAuthKeyInvalid or
// ErrAuthKeyExpired, never a hint about which part was wrong.
func (s *Store) ValidateAPIKey(ctx context.Context, key string) (*APIKey, error) {
	prefix, ok := splitKey(apiKeyKind, key)
	if !ok {
		prefix, ok = splitKey(relayKeyKind, key)
	}
	if !ok {
		return nil, ErrAuthKeyInvalid
	}
	k, hash, err := scanAPIKey(s.db.QueryRowContext(ctx, s.q("SELECT "+apiKeyCols+" FROM api_keys WHERE prefix = ?"), prefix))
	if err == sql.ErrNoRows || (err == nil && !keyMatches(key, hash)) {
		return nil, ErrAuthKeyInvalid
	}
	if err != nil {
		return nil, wrap("validate api key", err)
	}
	now := s.now()
	if !k.Expiry.IsZero() && !now.Before(k.Expiry) {
		return nil, ErrAuthKeyExpired
	}
	k.LastUsed = now
	unlock := s.lockWrite()
	_, err = s.db.ExecContext(ctx, s.q("UPDATE api_keys SET last_used_at = ? WHERE id = ?"), now.UnixNano(), k.ID)
	unlock()
	if err != nil {
		return nil, wrap("validate api key", err)
	}
	return k, nil
}

// ListAPIKeys returns all admin API keys.
func (s *Store) ListAPIKeys(ctx context.Context) ([]*APIKey, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+apiKeyCols+" FROM api_keys ORDER BY id")
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	defer rows.Close()
	var out []*APIKey
	for rows.Next() {
		k, _, err := scanAPIKey(rows)
		if err != nil {
			return nil, wrap("list api keys", err)
		}
		out = append(out, k)
	}
	return out, wrap("list api keys", rows.Err())
}

// ExpireAPIKey makes an admin API key unusable from now on.
func (s *Store) ExpireAPIKey(ctx context.Context, id int64) error {
	return s.exec(ctx, "expire api key", "UPDATE api_keys SET expires_at = ? WHERE id = ?", s.now().UnixNano(), id)
}

// DeleteAPIKey deletes an admin API key.
func (s *Store) DeleteAPIKey(ctx context.Context, id int64) error {
	return s.exec(ctx, "delete api key", "DELETE FROM api_keys WHERE id = ?", id)
}
