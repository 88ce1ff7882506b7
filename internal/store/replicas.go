package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Replicas: several coordination servers on one PostgreSQL database
// (docs/HA.md). The database is the only shared thing and the only
// arbiter: each replica has a row in the replicas table that it refreshes
// (Heartbeat), a node's online row names the replica its stream is on
// (SetOnlineVia), and a node whose replica's heartbeat lapsed is marked
// offline (MarkLapsedOffline, run by whichever replica holds the
// singleton duties, HoldDuties). A change-log insert notifies the channel
// warren_changes (migration 8), which wakes the replicas' followers
// (WatchChanges) promptly; a replica that missed notifications still
// reads every change from the log at its next pass. On SQLite there is
// one server: these are no-ops or always true.

// ErrServerKeyMismatch is a server key that is not the one the database
// was first served with.
var ErrServerKeyMismatch = errors.New("store: the database is served with another server key")

const (
	serverKeySetting = "server_public_key"
	changeMarkKey    = "changes_mark"
	// dutyLockID is the advisory lock whose holder runs the duties.
	dutyLockID = 7235610
	// notifyChannel is what change-log inserts notify.
	notifyChannel = "warren_changes"
)

// Shared reports whether the store can be shared by several server
// processes (PostgreSQL).
func (s *Store) Shared() bool { return s.dialect == dialectPostgres }

// ClaimServerKey records pub as the deployment's server public key if
// none is recorded, and fails with ErrServerKeyMismatch if another is:
// every replica must be the same server to the nodes (one pin).
func (s *Store) ClaimServerKey(ctx context.Context, pub string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var stored string
		err := tx.QueryRowContext(ctx, s.q("SELECT value FROM settings WHERE key = ?"+s.forUpdate()), serverKeySetting).Scan(&stored)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, s.q("INSERT INTO settings (key, value) VALUES (?, ?)"), serverKeySetting, pub)
			return err
		case err != nil:
			return err
		case subtle.ConstantTimeCompare([]byte(stored), []byte(pub)) != 1:
			return fmt.Errorf("%w (database: %s, this server: %s)", ErrServerKeyMismatch, stored, pub)
		}
		return nil
	})
	if errors.Is(err, ErrServerKeyMismatch) {
		return err
	}
	if isUnique(err) { // another replica recorded one at the same moment
		return s.ClaimServerKey(ctx, pub)
	}
	return wrap("claim server key", err)
}

// dbNow is the time heartbeats are written and compared in: the
// database server's clock on PostgreSQL, so that replicas on hosts whose
// clocks disagree still agree on whose heartbeat lapsed (Options.Now, if
// given, in tests; the local clock on SQLite).
func (s *Store) dbNow(ctx context.Context) (time.Time, error) {
	if s.fakeNow || s.dialect != dialectPostgres {
		return s.now(), nil
	}
	var us int64
	err := s.db.QueryRowContext(ctx, "SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint").Scan(&us)
	return time.UnixMicro(us), wrap("database clock", err)
}

// Heartbeat records that replica is alive now.
func (s *Store) Heartbeat(ctx context.Context, replica string) error {
	t, err := s.dbNow(ctx)
	if err != nil {
		return err
	}
	now := t.UnixNano()
	unlock := s.lockWrite()
	defer unlock()
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO replicas (id, heartbeat, started_at) VALUES (?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat`), replica, now, now)
	return wrap("heartbeat", err)
}

// LeaveReplicas removes replica's row and its relay and marks its nodes
// offline (a replica shutting down cleanly).
func (s *Store) LeaveReplicas(ctx context.Context, replica string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q("UPDATE nodes SET online = FALSE WHERE online AND replica = ?"), replica); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q("DELETE FROM replica_relays WHERE replica = ?"), replica); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q("DELETE FROM replicas WHERE id = ?"), replica)
		return err
	})
	return wrap("leave replicas", err)
}

// LiveReplicas returns the replicas whose heartbeat is at most lapse old.
func (s *Store) LiveReplicas(ctx context.Context, lapse time.Duration) ([]string, error) {
	now, err := s.dbNow(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.q("SELECT id FROM replicas WHERE heartbeat >= ? ORDER BY id"), now.Add(-lapse).UnixNano())
	if err != nil {
		return nil, wrap("live replicas", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrap("live replicas", err)
		}
		out = append(out, id)
	}
	return out, wrap("live replicas", rows.Err())
}

// MarkLapsedOffline marks offline every online node whose replica's
// heartbeat is older than lapse or that names no live replica (a node
// marked online before replicas existed names none) and every
// WireGuard-only member whose gateway is offline, removes lapsed
// replicas' relays (ReplicaRelays), deletes the rows of replicas gone for
// longer than ten lapses, and returns how many nodes it marked.
func (s *Store) MarkLapsedOffline(ctx context.Context, lapse time.Duration) (int64, error) {
	now, err := s.dbNow(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// WireGuard-only members name no replica: their gateway reports
		// them, and they go offline with it.
		res, err := tx.ExecContext(ctx, s.q(`UPDATE nodes SET online = FALSE WHERE online AND wg_via = 0
			AND replica NOT IN (SELECT id FROM replicas WHERE heartbeat >= ?)`), now.Add(-lapse).UnixNano())
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		res, err = tx.ExecContext(ctx, `UPDATE nodes SET online = FALSE WHERE online AND wg_via <> 0
			AND wg_via NOT IN (SELECT id FROM nodes WHERE online AND wg_via = 0)`)
		if err != nil {
			return err
		}
		m, _ := res.RowsAffected()
		n += m
		// A lapsed replica's relay leaves the relay map.
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM replica_relays
			WHERE replica NOT IN (SELECT id FROM replicas WHERE heartbeat >= ?)`), now.Add(-lapse).UnixNano()); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q("DELETE FROM replicas WHERE heartbeat < ?"), now.Add(-10*lapse).UnixNano())
		return err
	})
	return n, wrap("mark lapsed offline", err)
}

// SetOnlineVia marks a node online with its stream on replica.
func (s *Store) SetOnlineVia(ctx context.Context, id int64, replica string, lastSeen time.Time) error {
	return s.exec(ctx, "set online", "UPDATE nodes SET online = TRUE, last_seen = ?, replica = ? WHERE id = ?", tsOf(lastSeen), replica, id)
}

// SetOfflineVia marks a node offline if its stream is still on replica
// (not if it moved to another meanwhile); ErrNotFound if it is gone or
// moved.
func (s *Store) SetOfflineVia(ctx context.Context, id int64, replica string, lastSeen time.Time) error {
	return s.exec(ctx, "set offline", "UPDATE nodes SET online = FALSE, last_seen = ? WHERE id = ? AND replica = ?", tsOf(lastSeen), id, replica)
}

// DeleteOfflineNode deletes a node unless it is online (its stream may
// be on another replica); ErrNotFound if it is gone or online.
func (s *Store) DeleteOfflineNode(ctx context.Context, id int64) error {
	return s.exec(ctx, "delete offline node", "DELETE FROM nodes WHERE id = ? AND NOT online", id)
}

// PruneChangesOlderThan prunes the change log by age: changes logged
// more than keep ago (at most about twice keep) are deleted. It keeps a
// mark (the last sequence number and when it was read) in settings and
// prunes up to the mark once the mark is keep old, so a replica that is
// less than keep behind never misses a change.
func (s *Store) PruneChangesOlderThan(ctx context.Context, keep time.Duration) error {
	now := s.now()
	var v string
	err := s.db.QueryRowContext(ctx, s.q("SELECT value FROM settings WHERE key = ?"), changeMarkKey).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return wrap("prune changes", err)
	}
	seq, at, ok := parseMark(v)
	if ok && now.Sub(at) < keep {
		return nil
	}
	if ok {
		if err := s.PruneChanges(ctx, seq); err != nil {
			return err
		}
	}
	last, err := s.LastChange(ctx)
	if err != nil {
		return err
	}
	mark := strconv.FormatInt(last, 10) + "," + strconv.FormatInt(now.UnixNano(), 10)
	unlock := s.lockWrite()
	defer unlock()
	res, err := s.db.ExecContext(ctx, s.q("UPDATE settings SET value = ? WHERE key = ?"), mark, changeMarkKey)
	if err == nil {
		if n, _ := res.RowsAffected(); n == 0 {
			_, err = s.db.ExecContext(ctx, s.q("INSERT INTO settings (key, value) VALUES (?, ?)"), changeMarkKey, mark)
		}
	}
	if isUnique(err) {
		err = nil
	}
	return wrap("prune changes: mark", err)
}

func parseMark(v string) (int64, time.Time, bool) {
	a, b, ok := strings.Cut(v, ",")
	if !ok {
		return 0, time.Time{}, false
	}
	seq, err1 := strconv.ParseInt(a, 10, 64)
	at, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, time.Time{}, false
	}
	return seq, time.Unix(0, at), true
}

// WatchChanges calls wake whenever another transaction logged changes
// (PostgreSQL NOTIFY on warren_changes), and once after each
// (re)connection, since notifications sent while disconnected are lost;
// it returns when ctx ends. On SQLite it returns at once.
func (s *Store) WatchChanges(ctx context.Context, wake func(), retry time.Duration) {
	if s.dialect != dialectPostgres {
		return
	}
	for ctx.Err() == nil {
		s.watchOnce(ctx, wake)
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

func (s *Store) watchOnce(ctx context.Context, wake func()) {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return
	}
	wake() // catch up on what was logged while not listening
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return
		}
		wake()
	}
}

// HoldDuties competes for the singleton duties (a session-level
// PostgreSQL advisory lock on a dedicated connection) until ctx ends:
// held is called with true when this process got the lock and with false
// when it lost it (its connection failed; the server released the lock
// with the session, so another process takes it over). The connection is
// checked every interval, so a holder notices a lost lock within about
// one interval. On SQLite the one server holds the duties: held(true)
// once.
func (s *Store) HoldDuties(ctx context.Context, interval time.Duration, held func(bool)) {
	if s.dialect != dialectPostgres {
		held(true)
		<-ctx.Done()
		return
	}
	for ctx.Err() == nil {
		s.holdOnce(ctx, interval, held)
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

func (s *Store) holdOnce(ctx context.Context, interval time.Duration, held func(bool)) {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	have := false
	defer func() {
		if have {
			held(false)
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, interval*3)
		var err error
		if have {
			_, err = conn.Exec(qctx, "SELECT 1")
		} else {
			var got bool
			err = conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", dutyLockID).Scan(&got)
			if err == nil && got {
				have = true
				held(true)
			}
		}
		cancel()
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
