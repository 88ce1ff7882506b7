package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// migration is one schema version. Statements use the placeholders {{ID}}
// (an auto-increment primary key) and {{BLOB}}, filled in per dialect, so
// both backends get the same logical schema.
type migration struct {
	version int
	stmts   []string
	// sqlite and postgres are statements for one dialect only (triggers),
	// run after stmts.
	sqlite, postgres []string
}

var migrations = []migration{
	{version: 1, stmts: []string{
		`CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
		`CREATE TABLE users (
			id {{ID}},
			name TEXT NOT NULL UNIQUE,
			created_at BIGINT NOT NULL)`,
		`CREATE TABLE preauth_keys (
			id {{ID}},
			user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			prefix TEXT NOT NULL UNIQUE,
			hash {{BLOB}} NOT NULL,
			reusable BOOLEAN NOT NULL,
			ephemeral BOOLEAN NOT NULL,
			expires_at BIGINT,
			used_count BIGINT NOT NULL DEFAULT 0,
			used_at BIGINT,
			created_at BIGINT NOT NULL)`,
		`CREATE INDEX preauth_keys_user ON preauth_keys(user_id)`,
		`CREATE TABLE nodes (
			id {{ID}},
			user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
			auth_key_id BIGINT REFERENCES preauth_keys(id) ON DELETE SET NULL,
			node_key TEXT NOT NULL UNIQUE,
			hostname TEXT NOT NULL,
			name TEXT NOT NULL UNIQUE,
			ipv4 TEXT NOT NULL UNIQUE,
			ipv6 TEXT NOT NULL UNIQUE,
			endpoints TEXT NOT NULL DEFAULT '[]',
			last_seen BIGINT,
			online BOOLEAN NOT NULL DEFAULT FALSE,
			expires_at BIGINT,
			ephemeral BOOLEAN NOT NULL,
			created_at BIGINT NOT NULL)`,
		`CREATE INDEX nodes_user ON nodes(user_id)`,
		`CREATE TABLE api_keys (
			id {{ID}},
			prefix TEXT NOT NULL UNIQUE,
			hash {{BLOB}} NOT NULL,
			expires_at BIGINT,
			last_used_at BIGINT,
			created_at BIGINT NOT NULL)`,
	}},
	{version: 2, stmts: []string{
		`CREATE TABLE dns_records (
			id {{ID}},
			name TEXT NOT NULL,
			type TEXT NOT NULL,
			ttl BIGINT NOT NULL,
			value TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			UNIQUE (name, type, value))`,
		`CREATE TABLE dns_zones (
			id {{ID}},
			name TEXT NOT NULL UNIQUE,
			created_at BIGINT NOT NULL)`,
		`CREATE TABLE dns_routes (
			id {{ID}},
			domain TEXT NOT NULL UNIQUE,
			resolvers TEXT NOT NULL,
			created_at BIGINT NOT NULL)`,
	}},
	{version: 3, stmts: []string{
		`ALTER TABLE nodes ADD COLUMN disco_key TEXT NOT NULL DEFAULT ''`,
	}},
	{version: 4, stmts: []string{
		// Access policy versions (policy.go): the newest row is in force;
		// empty text means no policy.
		`CREATE TABLE policies (
			id {{ID}},
			text TEXT NOT NULL,
			created_at BIGINT NOT NULL)`,
		// Tags (tags.go): comma-separated, sorted.
		`ALTER TABLE preauth_keys ADD COLUMN tags TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE nodes ADD COLUMN tags TEXT NOT NULL DEFAULT ''`,
	}},
	{version: 5, stmts: []string{
		// Subnet routes and exit nodes (routes.go): what the node
		// advertises and what an admin approved, each a comma-separated
		// sorted list of canonical prefixes.
		`ALTER TABLE nodes ADD COLUMN advertised_routes TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE nodes ADD COLUMN approved_routes TEXT NOT NULL DEFAULT ''`,
	}},
	{version: 6, stmts: []string{
		// API key scopes (keys.go): '' a full admin key, 'relay' a relay
		// key that may only list node keys.
		`ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT ''`,
	}},
	{7, []string{
		// The change log (changes.go): one row per write to what the
		// network maps are made of, appended by triggers in the writing
		// transaction, so a server follows every writer (itself, the
		// admin API, another process) by reading the rows after the last
		// it applied.
		`CREATE TABLE changes (
			seq {{ID}},
			kind TEXT NOT NULL,
			ref BIGINT NOT NULL)`,
	}, sqliteChangeTriggers(), []string{
		`CREATE FUNCTION warren_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF TG_OP = 'DELETE' AND TG_ARGV[1] = 'id' THEN
				INSERT INTO changes (kind, ref) VALUES (TG_ARGV[0], OLD.id);
			ELSIF TG_ARGV[1] = 'id' THEN
				INSERT INTO changes (kind, ref) VALUES (TG_ARGV[0], NEW.id);
			ELSE
				INSERT INTO changes (kind, ref) VALUES (TG_ARGV[0], 0);
			END IF;
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER nodes_log AFTER INSERT OR UPDATE OR DELETE ON nodes FOR EACH ROW EXECUTE FUNCTION warren_log_change('node', 'id')`,
		`CREATE TRIGGER users_log AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION warren_log_change('user', 'id')`,
		`CREATE TRIGGER dns_records_log AFTER INSERT OR UPDATE OR DELETE ON dns_records FOR EACH ROW EXECUTE FUNCTION warren_log_change('dns', '')`,
		`CREATE TRIGGER dns_zones_log AFTER INSERT OR UPDATE OR DELETE ON dns_zones FOR EACH ROW EXECUTE FUNCTION warren_log_change('dns', '')`,
		`CREATE TRIGGER dns_routes_log AFTER INSERT OR UPDATE OR DELETE ON dns_routes FOR EACH ROW EXECUTE FUNCTION warren_log_change('dns', '')`,
		`CREATE TRIGGER policies_log AFTER INSERT OR UPDATE OR DELETE ON policies FOR EACH ROW EXECUTE FUNCTION warren_log_change('policy', '')`,
	}},
	{8, []string{
		// Replicas (replicas.go): the servers sharing a PostgreSQL
		// database, each with a heartbeat; a node's online row names the
		// replica its stream is on, so the others mark it offline when
		// that replica's heartbeat lapses.
		`CREATE TABLE replicas (
			id TEXT PRIMARY KEY,
			heartbeat BIGINT NOT NULL,
			started_at BIGINT NOT NULL)`,
		`ALTER TABLE nodes ADD COLUMN replica TEXT NOT NULL DEFAULT ''`,
	}, nil, []string{
		// Each transaction that logs changes wakes the replicas'
		// followers (LISTEN warren_changes); the log stays the truth.
		`CREATE FUNCTION warren_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_notify('warren_changes', '');
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER changes_notify AFTER INSERT ON changes FOR EACH STATEMENT EXECUTE FUNCTION warren_notify_change()`,
	}},
	{version: 9, stmts: []string{
		// WireGuard-only members (wireguard.go): wg_via is the gateway
		// node's ID (0: a Warren node); wg_rx/wg_tx the device's traffic
		// as its gateway last reported it.
		`ALTER TABLE nodes ADD COLUMN wg_via BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE nodes ADD COLUMN wg_rx BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE nodes ADD COLUMN wg_tx BIGINT NOT NULL DEFAULT 0`,
	}},
	{version: 10, stmts: []string{
		// Sign-in through OIDC (identity.go): a user's identities at
		// identity providers, keyed by issuer and subject (never the
		// email), and the browser sessions of signed-in people, kept as
		// the SHA-256 of the cookie's secret.
		`CREATE TABLE user_identities (
			id {{ID}},
			user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			issuer TEXT NOT NULL,
			subject TEXT NOT NULL,
			email TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			last_login_at BIGINT NOT NULL,
			UNIQUE (issuer, subject))`,
		`CREATE INDEX user_identities_user ON user_identities(user_id)`,
		`CREATE TABLE web_sessions (
			id {{ID}},
			hash {{BLOB}} NOT NULL UNIQUE,
			user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			email TEXT NOT NULL,
			admin BOOLEAN NOT NULL,
			expires_at BIGINT NOT NULL,
			created_at BIGINT NOT NULL)`,
		// The audit log (audit.go): who did what, when, from where.
		`CREATE TABLE audit_log (
			id {{ID}},
			at BIGINT NOT NULL,
			actor TEXT NOT NULL,
			action TEXT NOT NULL,
			target TEXT NOT NULL,
			detail TEXT NOT NULL,
			source TEXT NOT NULL,
			ok BOOLEAN NOT NULL)`,
		`CREATE INDEX audit_log_at ON audit_log(at)`,
		// Interactive registration (registrations.go): a node that asked
		// to join without an auth key waits on a one-time registration
		// ID until a person signs in for it (and, in approval mode, an
		// admin approves the node).
		`CREATE TABLE registrations (
			id {{ID}},
			reg_id TEXT NOT NULL UNIQUE,
			node_key TEXT NOT NULL,
			hostname TEXT NOT NULL,
			user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
			node_id BIGINT REFERENCES nodes(id) ON DELETE CASCADE,
			expires_at BIGINT NOT NULL,
			created_at BIGINT NOT NULL)`,
		`ALTER TABLE nodes ADD COLUMN approved BOOLEAN NOT NULL DEFAULT TRUE`,
		`ALTER TABLE nodes ADD COLUMN interactive BOOLEAN NOT NULL DEFAULT FALSE`,
	}},
	{version: 11, stmts: []string{
		// What a node reports about itself (hostinfo.go): its OS and
		// Warren version, shown to admins, in a table of its own so that
		// a report is no change of the network maps (no trigger).
		`CREATE TABLE node_hostinfo (
			node_id BIGINT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
			os TEXT NOT NULL,
			version TEXT NOT NULL,
			updated_at BIGINT NOT NULL)`,
	}},
	{version: 12, stmts: []string{
		// Peer relays (relays.go): the UDP port a node offers to relay on
		// (0: none) and whether an admin approved it as a peer relay.
		`ALTER TABLE nodes ADD COLUMN relay_port BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE nodes ADD COLUMN relay_approved BOOLEAN NOT NULL DEFAULT FALSE`,
	}},
	{version: 13, stmts: []string{
		// Replicas' embedded relays (replica_relays.go): each live
		// replica's relay, by its public URL; the row's ID makes its
		// region ID. A change of the list is a change of every map.
		`CREATE TABLE replica_relays (
			id {{ID}},
			url TEXT NOT NULL UNIQUE,
			stun TEXT NOT NULL,
			relay_key TEXT NOT NULL,
			replica TEXT NOT NULL)`,
	}, sqlite: replicaRelayTriggersSQLite(), postgres: []string{
		`CREATE TRIGGER replica_relays_log AFTER INSERT OR UPDATE OR DELETE ON replica_relays FOR EACH ROW EXECUTE FUNCTION warren_log_change('relays', '')`,
	}},
	{version: 14, stmts: []string{
		// WireGuard-only members' traffic (wireguard.go): when the
		// gateway reported the wg_rx/wg_tx now stored (NULL: never), which
		// the maps carry with the counters.
		`ALTER TABLE nodes ADD COLUMN wg_reported_at BIGINT`,
	}},
}

// replicaRelayTriggersSQLite are migration 13's triggers for SQLite.
func replicaRelayTriggersSQLite() []string {
	var out []string
	for _, ev := range []string{"INSERT", "UPDATE", "DELETE"} {
		out = append(out, fmt.Sprintf("CREATE TRIGGER replica_relays_log_%s AFTER %s ON replica_relays BEGIN INSERT INTO changes (kind, ref) VALUES ('%s', 0); END",
			strings.ToLower(ev), ev, ChangeRelays))
	}
	return out
}

// sqliteChangeTriggers are migration 7's triggers for SQLite, which has
// one trigger per table and event.
func sqliteChangeTriggers() []string {
	var out []string
	for _, t := range []struct{ table, kind, ref string }{
		{"nodes", ChangeNode, "id"}, {"users", ChangeUser, "id"},
		{"dns_records", ChangeDNS, ""}, {"dns_zones", ChangeDNS, ""}, {"dns_routes", ChangeDNS, ""},
		{"policies", ChangePolicy, ""},
	} {
		for _, ev := range []string{"INSERT", "UPDATE", "DELETE"} {
			if t.table == "users" && ev != "UPDATE" {
				continue // only a rename changes maps; a user with nodes cannot be deleted
			}
			ref := "0"
			if t.ref != "" && ev == "DELETE" {
				ref = "OLD." + t.ref
			} else if t.ref != "" {
				ref = "NEW." + t.ref
			}
			out = append(out, fmt.Sprintf("CREATE TRIGGER %s_log_%s AFTER %s ON %s BEGIN INSERT INTO changes (kind, ref) VALUES ('%s', %s); END",
				t.table, strings.ToLower(ev), ev, t.table, t.kind, ref))
		}
	}
	return out
}

// SchemaVersion is the newest schema this build knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

func (s *Store) ddl(stmt string) string {
	id, blob := "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"
	if s.dialect == dialectPostgres {
		id, blob = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "BYTEA"
	}
	return strings.NewReplacer("{{ID}}", id, "{{BLOB}}", blob).Replace(stmt)
}

// migrate applies each pending migration in its own transaction, exactly
// once, recording it in schema_migrations. Concurrent Opens serialize on the
// SQLite write lock or a Postgres advisory lock.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		if !isUnique(err) { // two Postgres sessions racing on the catalog
			return fmt.Errorf("store: migrations table: %w", err)
		}
	}
	for _, m := range migrations {
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			if s.dialect == dialectPostgres {
				if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7235600)"); err != nil {
					return err
				}
			}
			var max sql.NullInt64
			if err := tx.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&max); err != nil {
				return err
			}
			if max.Valid && int(max.Int64) > SchemaVersion() {
				return fmt.Errorf("database schema version %d is newer than this build's %d", max.Int64, SchemaVersion())
			}
			if max.Valid && int(max.Int64) >= m.version {
				return nil
			}
			stmts := append(slices.Clone(m.stmts), m.sqlite...)
			if s.dialect == dialectPostgres {
				stmts = append(slices.Clone(m.stmts), m.postgres...)
			}
			for _, stmt := range stmts {
				if _, err := tx.ExecContext(ctx, s.ddl(stmt)); err != nil {
					return fmt.Errorf("version %d: %w", m.version, err)
				}
			}
			_, err := tx.ExecContext(ctx, s.q("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"),
				m.version, s.now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("store: migrate: %w", err)
		}
	}
	return nil
}

// loadPrefixes fixes the deployment's address prefixes: the first Open stores
// them (generating a random ULA /48 if none was given); later Opens must agree
// or leave them unset, so addresses never move under existing nodes.
func (s *Store) loadPrefixes(ctx context.Context) error {
	if s.v4.IsValid() && (!s.v4.Addr().Is4() || s.v4.Bits() > 30) {
		return fmt.Errorf("%w: IPv4 prefix %v (want IPv4, at most /30)", ErrInvalid, s.v4)
	}
	if s.v6.IsValid() && (!s.v6.Addr().Is6() || s.v6.Addr().Is4In6() || s.v6.Bits() > 126) {
		return fmt.Errorf("%w: IPv6 prefix %v (want IPv6, at most /126)", ErrInvalid, s.v6)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		for _, p := range []*netip.Prefix{&s.v4, &s.v6} {
			key := "ipv4_prefix"
			if p == &s.v6 {
				key = "ipv6_prefix"
			}
			var stored string
			err := tx.QueryRowContext(ctx, s.q("SELECT value FROM settings WHERE key = ?"+s.forUpdate()), key).Scan(&stored)
			switch {
			case err == nil:
				sp, perr := netip.ParsePrefix(stored)
				if perr != nil {
					return fmt.Errorf("store: stored %s %q: %w", key, stored, perr)
				}
				if p.IsValid() && p.Masked() != sp {
					return fmt.Errorf("%w: %s is %v in the database, configured %v", ErrInvalid, key, sp, *p)
				}
				*p = sp
			case errors.Is(err, sql.ErrNoRows):
				if !p.IsValid() && p == &s.v4 {
					*p = DefaultIPv4Prefix
				} else if !p.IsValid() {
					var b [5]byte
					rand.Read(b[:])
					*p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, b[0], b[1], b[2], b[3], b[4]}), 48)
				}
				*p = p.Masked()
				if _, err := tx.ExecContext(ctx, s.q("INSERT INTO settings (key, value) VALUES (?, ?)"), key, p.String()); err != nil {
					return fmt.Errorf("store: save %s: %w", key, err)
				}
			default:
				return fmt.Errorf("store: load %s: %w", key, err)
			}
		}
		return nil
	})
}
