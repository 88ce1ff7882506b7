package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/store/storetest"
)

// eachBackend runs f once per backend with a fresh, open store.
func eachBackend(t *testing.T, opts Options, f func(t *testing.T, s *Store, dsn string)) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			dsn := b.DSN(t)
			s, err := Open(context.Background(), dsn, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			f(t, s, dsn)
		})
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestUsersCRUD(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		if _, err := s.CreateUser(ctx, "alice"); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate user: %v", err)
		}
		must[*User](t)(s.CreateUser(ctx, "bob"))
		if got := must[*User](t)(s.GetUserByName(ctx, "alice")); got.ID != u.ID {
			t.Fatalf("by name: %+v", got)
		}
		if err := s.RenameUser(ctx, u.ID, "bob"); !errors.Is(err, ErrConflict) {
			t.Fatalf("rename onto taken: %v", err)
		}
		if err := s.RenameUser(ctx, u.ID, "carol"); err != nil {
			t.Fatal(err)
		}
		if got := must[*User](t)(s.GetUser(ctx, u.ID)); got.Name != "carol" || got.Created.IsZero() {
			t.Fatalf("get: %+v", got)
		}
		if l := must[[]*User](t)(s.ListUsers(ctx)); len(l) != 2 || l[0].Name != "carol" || l[1].Name != "bob" {
			t.Fatalf("list: %v", l)
		}
		if err := s.DeleteUser(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetUser(ctx, u.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted user: %v", err)
		}
		if err := s.DeleteUser(ctx, u.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

func TestNodesAndKeys(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	eachBackend(t, Options{Now: clock}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		if _, _, err := s.CreatePreAuthKey(ctx, 9999, PreAuthKeyOptions{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("key for missing user: %v", err)
		}
		key, k, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true, Expiry: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		n1 := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:1"), "My Laptop", RegisterOptions{Endpoints: []string{"192.0.2.1:41641"}}))
		n2 := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:2"), "my-laptop", RegisterOptions{}))
		n3 := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:3"), "MY_LAPTOP!", RegisterOptions{}))
		if n1.Name != "my-laptop" || n2.Name != "my-laptop-1" || n3.Name != "my-laptop-2" {
			t.Fatalf("names: %q %q %q", n1.Name, n2.Name, n3.Name)
		}
		if n1.IPv4 != netip.MustParseAddr("100.64.0.1") || n2.IPv4 != netip.MustParseAddr("100.64.0.2") {
			t.Fatalf("ipv4: %v %v", n1.IPv4, n2.IPv4)
		}
		if !s.IPv6Prefix().Contains(n1.IPv6) || n1.IPv6 == n2.IPv6 || s.IPv6Prefix().Bits() != 48 || n1.IPv6.As16()[0] != 0xfd {
			t.Fatalf("ipv6: %v %v in %v", n1.IPv6, n2.IPv6, s.IPv6Prefix())
		}
		// Re-registering the same node key returns the same node.
		again := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:1"), "other", RegisterOptions{}))
		if again.ID != n1.ID || again.Name != "my-laptop" || again.IPv4 != n1.IPv4 {
			t.Fatalf("re-register: %+v", again)
		}
		got := must[*Node](t)(s.GetNodeByKey(ctx, nodeKeyOf("nodekey:1")))
		if got.Hostname != "My Laptop" || len(got.Endpoints) != 1 || got.UserID != u.ID || got.AuthKeyID != k.ID || got.Online {
			t.Fatalf("get by key: %+v", got)
		}
		if err := s.UpdateEndpoints(ctx, n1.ID, []string{"a:1", "b:2"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetOnline(ctx, n1.ID, true, now); err != nil {
			t.Fatal(err)
		}
		if err := s.SetNodeExpiry(ctx, n1.ID, now.Add(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		got = must[*Node](t)(s.GetNode(ctx, n1.ID))
		if len(got.Endpoints) != 2 || !got.Online || !got.LastSeen.Equal(now) || !got.Expiry.Equal(now.Add(24*time.Hour)) {
			t.Fatalf("updated: %+v", got)
		}
		if err := s.RenameNode(ctx, n1.ID, "my-laptop-1"); !errors.Is(err, ErrConflict) {
			t.Fatalf("rename onto taken: %v", err)
		}
		if err := s.RenameNode(ctx, n1.ID, "Bad Name"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("rename invalid: %v", err)
		}
		if err := s.DeleteUser(ctx, u.ID); !errors.Is(err, ErrConflict) {
			t.Fatalf("delete user with nodes: %v", err)
		}
		if err := s.DeleteNode(ctx, n2.ID); err != nil {
			t.Fatal(err)
		}
		if l := must[[]*Node](t)(s.ListNodes(ctx, u.ID)); len(l) != 2 {
			t.Fatalf("list: %d", len(l))
		}
		// The freed name and address go to the next node; held ones never do.
		n4 := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:4"), "my laptop", RegisterOptions{}))
		if n4.Name != "my-laptop-1" || n4.IPv4 != n2.IPv4 {
			t.Fatalf("after delete: %q %v", n4.Name, n4.IPv4)
		}
		if l := must[[]*PreAuthKey](t)(s.ListPreAuthKeys(ctx, 0)); len(l) != 1 || l[0].UsedCount != 4 || !l[0].UsedAt.Equal(now) {
			t.Fatalf("keys: %+v", l[0])
		}
		// Bad keys, another user's node key.
		for _, bad := range []string{"", "nonsense", key[:len(key)-1] + "0", "wkey_000000000000_" + key[len(key)-64:]} {
			if bad == key {
				continue
			}
			if _, err := s.RegisterNode(ctx, bad, nodeKeyOf("nodekey:x"), "x", RegisterOptions{}); !errors.Is(err, ErrAuthKeyInvalid) {
				t.Fatalf("bad key %q: %v", bad, err)
			}
		}
		bob := must[*User](t)(s.CreateUser(ctx, "bob"))
		bkey, _, _ := s.CreatePreAuthKey(ctx, bob.ID, PreAuthKeyOptions{Ephemeral: true})
		if _, err := s.RegisterNode(ctx, bkey, nodeKeyOf("nodekey:1"), "steal", RegisterOptions{}); !errors.Is(err, ErrNodeKeyInUse) {
			t.Fatalf("foreign node key: %v", err)
		}
		eph := must[*Node](t)(s.RegisterNode(ctx, bkey, nodeKeyOf("nodekey:b"), "b", RegisterOptions{}))
		if !eph.Ephemeral || eph.UserID != bob.ID {
			t.Fatalf("ephemeral: %+v", eph)
		}
		// One-off key reuse is refused, with nothing stored.
		if _, err := s.RegisterNode(ctx, bkey, nodeKeyOf("nodekey:c"), "c", RegisterOptions{}); !errors.Is(err, ErrAuthKeyUsed) {
			t.Fatalf("one-off reuse: %v", err)
		}
		if _, err := s.GetNodeByKey(ctx, nodeKeyOf("nodekey:c")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("refused node stored: %v", err)
		}
		// Expiry, by the clock and by hand.
		now = now.Add(2 * time.Hour)
		if _, err := s.RegisterNode(ctx, key, nodeKeyOf("nodekey:5"), "late", RegisterOptions{}); !errors.Is(err, ErrAuthKeyExpired) {
			t.Fatalf("expired key: %v", err)
		}
		k2, pk2, _ := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err := s.ExpirePreAuthKey(ctx, pk2.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RegisterNode(ctx, k2, nodeKeyOf("nodekey:6"), "x", RegisterOptions{}); !errors.Is(err, ErrAuthKeyExpired) {
			t.Fatalf("expired by hand: %v", err)
		}
		if err := s.DeletePreAuthKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if got := must[*Node](t)(s.GetNode(ctx, n1.ID)); got.AuthKeyID != 0 {
			t.Fatalf("node after key delete: %+v", got)
		}
	})
}

func TestAPIKeys(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	eachBackend(t, Options{Now: func() time.Time { return now }}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		key, k, err := s.CreateAPIKey(ctx, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var stored []byte
		s.db.QueryRowContext(ctx, s.q("SELECT hash FROM api_keys WHERE id = ?"), k.ID).Scan(&stored)
		if len(stored) != 32 || string(stored) == key {
			t.Fatalf("stored hash %x", stored)
		}
		if got, err := s.ValidateAPIKey(ctx, key); err != nil || got.ID != k.ID || !got.LastUsed.Equal(now) {
			t.Fatalf("validate: %+v %v", got, err)
		}
		for _, bad := range []string{"", key + "0", key[:len(key)-1] + "x", "wkey" + key[4:]} {
			if _, err := s.ValidateAPIKey(ctx, bad); !errors.Is(err, ErrAuthKeyInvalid) {
				t.Fatalf("bad %q: %v", bad, err)
			}
		}
		now = now.Add(2 * time.Hour)
		if _, err := s.ValidateAPIKey(ctx, key); !errors.Is(err, ErrAuthKeyExpired) {
			t.Fatalf("expired: %v", err)
		}
		key2, k2, _ := s.CreateAPIKey(ctx, time.Time{})
		if _, err := s.ValidateAPIKey(ctx, key2); err != nil {
			t.Fatal(err)
		}
		if err := s.ExpireAPIKey(ctx, k2.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ValidateAPIKey(ctx, key2); !errors.Is(err, ErrAuthKeyExpired) {
			t.Fatalf("expired by hand: %v", err)
		}
		if l := must[[]*APIKey](t)(s.ListAPIKeys(ctx)); len(l) != 2 {
			t.Fatalf("list: %d", len(l))
		}
		if err := s.DeleteAPIKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAddressExhaustion(t *testing.T) {
	opts := Options{IPv4Prefix: netip.MustParsePrefix("10.9.0.0/29"), IPv6Prefix: netip.MustParsePrefix("fd00:1:2::/48")}
	eachBackend(t, opts, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "u"))
		key, _, _ := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		seen := map[netip.Addr]bool{}
		for i := 1; i <= 6; i++ { // /29: .1 to .6; .0 and .7 are never handed out
			n, err := s.RegisterNode(ctx, key, nodeKeyOf(fmt.Sprint("k", i)), "h", RegisterOptions{})
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			if want := netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}); n.IPv4 != want {
				t.Fatalf("node %d ipv4 %v, want %v", i, n.IPv4, want)
			}
			if !opts.IPv6Prefix.Contains(n.IPv6) || seen[n.IPv6] {
				t.Fatalf("node %d ipv6 %v", i, n.IPv6)
			}
			seen[n.IPv6] = true
		}
		if _, err := s.RegisterNode(ctx, key, nodeKeyOf("k7"), "h", RegisterOptions{}); !errors.Is(err, ErrAddressExhausted) {
			t.Fatalf("exhausted: %v", err)
		}
		if l, _ := s.ListPreAuthKeys(ctx, u.ID); l[0].UsedCount != 6 {
			t.Fatalf("failed registration consumed the key: %d", l[0].UsedCount)
		}
	})
}

// TS-2025-007: 100 concurrent joins with one one-off key, exactly one wins.
func TestConcurrentOneOffKey(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "u"))
		key, _, _ := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{})
		var wg sync.WaitGroup
		var ok, used atomic.Int32
		errs := make(chan error, 100)
		start := make(chan struct{})
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.RegisterNode(ctx, key, nodeKeyOf(fmt.Sprint("nodekey:", i)), "racer", RegisterOptions{})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrAuthKeyUsed):
					used.Add(1)
				default:
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("unexpected: %v", err)
		}
		if ok.Load() != 1 || used.Load() != 99 {
			t.Fatalf("%d succeeded, %d refused as used", ok.Load(), used.Load())
		}
		if l := must[[]*Node](t)(s.ListNodes(ctx, 0)); len(l) != 1 {
			t.Fatalf("%d nodes stored", len(l))
		}
	})
}

func TestReopenMigrations(t *testing.T) {
	eachBackend(t, Options{IPv6Prefix: netip.MustParsePrefix("fd11:2233:4455::/48")}, func(t *testing.T, s *Store, dsn string) {
		ctx := context.Background()
		must[*User](t)(s.CreateUser(ctx, "keep"))
		s.Close()
		for range 2 {
			s2, err := Open(ctx, dsn, Options{}) // prefixes come from the database now
			if err != nil {
				t.Fatal(err)
			}
			var n int
			s2.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&n)
			if n != len(migrations) {
				t.Fatalf("%d migration rows, want %d", n, len(migrations))
			}
			if _, err := s2.GetUserByName(ctx, "keep"); err != nil {
				t.Fatal(err)
			}
			if s2.IPv6Prefix().String() != "fd11:2233:4455::/48" || s2.IPv4Prefix() != DefaultIPv4Prefix {
				t.Fatalf("prefixes %v %v", s2.IPv4Prefix(), s2.IPv6Prefix())
			}
			s2.Close()
		}
		if _, err := Open(ctx, dsn, Options{IPv4Prefix: netip.MustParsePrefix("10.0.0.0/8")}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("changed prefix accepted: %v", err)
		}
		// A schema newer than this build is refused.
		s3 := must[*Store](t)(Open(ctx, dsn, Options{}))
		s3.db.ExecContext(ctx, s3.q("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)"), SchemaVersion()+1)
		s3.Close()
		if _, err := Open(ctx, dsn, Options{}); err == nil {
			t.Fatal("newer schema accepted")
		}
	})
}

// A transaction abandoned mid-way (context cancelled, connection closed
// without commit) leaves nothing behind.
func TestAbortedTransaction(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, dsn string) {
		ctx, cancel := context.WithCancel(context.Background())
		u := must[*User](t)(s.CreateUser(context.Background(), "u"))
		key, _, _ := s.CreatePreAuthKey(context.Background(), u.ID, PreAuthKeyOptions{})
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, s.q("INSERT INTO users (name, created_at) VALUES (?, 0)"), "partial"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE preauth_keys SET used_count = 1"); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := tx.Commit(); err == nil {
			t.Fatal("commit after cancel succeeded")
		}
		s.Close()
		s2 := must[*Store](t)(Open(context.Background(), dsn, Options{}))
		defer s2.Close()
		if _, err := s2.GetUserByName(context.Background(), "partial"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("partial row: %v", err)
		}
		if _, err := s2.RegisterNode(context.Background(), key, nodeKeyOf("nk"), "h", RegisterOptions{}); err != nil {
			t.Fatalf("key consumed by the aborted transaction: %v", err)
		}
	})
}

// The process is killed (SIGKILL) in the middle of a write transaction; the
// reopened SQLite database has none of its rows and passes integrity_check.
func TestCrashMidTransactionSQLite(t *testing.T) {
	if path := os.Getenv("WARREN_STORE_CRASH_DB"); path != "" {
		crashChild(path)
		return
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "crash.db")
	s := must[*Store](t)(Open(ctx, "sqlite:"+path, Options{}))
	must[*User](t)(s.CreateUser(ctx, "before"))
	s.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidTransactionSQLite$")
	cmd.Env = append(os.Environ(), "WARREN_STORE_CRASH_DB="+path)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 { // -1: killed by a signal
		t.Fatalf("child did not die by signal: %v\n%s", err, out)
	}
	s2 := must[*Store](t)(Open(ctx, "sqlite:"+path, Options{}))
	defer s2.Close()
	users := must[[]*User](t)(s2.ListUsers(ctx))
	if len(users) != 1 || users[0].Name != "before" {
		t.Fatalf("users after crash: %v", users)
	}
	var res string
	if err := s2.db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check: %q %v", res, err)
	}
	must[*User](t)(s2.CreateUser(ctx, "after"))
}

func crashChild(path string) {
	ctx := context.Background()
	s, err := Open(ctx, "sqlite:"+path, Options{})
	if err != nil {
		os.Exit(3)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		os.Exit(4)
	}
	for i := range 500 {
		if _, err := tx.ExecContext(ctx, "INSERT INTO users (name, created_at) VALUES (?, 0)", fmt.Sprint("partial", i)); err != nil {
			os.Exit(5)
		}
	}
	p, _ := os.FindProcess(os.Getpid())
	p.Kill()
	select {}
}

// Another process holds the SQLite write lock: a registration waits (up to
// busy_timeout, here cut short by its context), fails with an error, stores
// nothing and leaves the key unused; it succeeds once the lock is released.
func TestSQLiteLockHeld(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lock.db")
	s := must[*Store](t)(Open(ctx, "sqlite:"+path, Options{}))
	defer s.Close()
	u := must[*User](t)(s.CreateUser(ctx, "u"))
	key, _, _ := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{})
	other := must[*Store](t)(Open(ctx, "sqlite:"+path, Options{}))
	defer other.Close()
	holder, err := other.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: takes the write lock
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.RegisterNode(short, key, nodeKeyOf("nk"), "h", RegisterOptions{}); err == nil {
		t.Fatal("registered while another connection held the write lock")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("context deadline ignored: waited %v", d)
	}
	holder.Rollback()
	if l := must[[]*Node](t)(s.ListNodes(ctx, 0)); len(l) != 0 {
		t.Fatalf("%d nodes stored", len(l))
	}
	if _, err := s.RegisterNode(ctx, key, nodeKeyOf("nk"), "h", RegisterOptions{}); err != nil {
		t.Fatalf("after the lock was released: %v", err)
	}
}

func TestRotateKeyAndReauth(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "rot"))
		key, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		n1 := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:a"), "one", RegisterOptions{}))
		n2 := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:b"), "two", RegisterOptions{}))
		if err := s.RotateNodeKey(ctx, n1.ID, nodeKeyOf("nodekey:b")); !errors.Is(err, ErrNodeKeyInUse) {
			t.Fatalf("rotate onto another node's key: %v", err)
		}
		if err := s.RotateNodeKey(ctx, n1.ID, nodeKeyOf("nodekey:c")); err != nil {
			t.Fatal(err)
		}
		if err := s.RotateNodeKey(ctx, 99999, nodeKeyOf("nodekey:d")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("rotate a missing node: %v", err)
		}
		got := must[*Node](t)(s.GetNodeByKey(ctx, nodeKeyOf("nodekey:c")))
		if got.ID != n1.ID || got.Name != n1.Name || got.IPv4 != n1.IPv4 || got.IPv6 != n1.IPv6 {
			t.Fatalf("rotated node %+v, was %+v", got, n1)
		}
		if _, err := s.GetNodeByKey(ctx, nodeKeyOf("nodekey:a")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old key still found: %v", err)
		}
		// An expired node registering again with a valid key comes back.
		if err := s.SetNodeExpiry(ctx, n2.ID, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		again := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:b"), "two", RegisterOptions{}))
		if again.ID != n2.ID || !again.Expiry.IsZero() {
			t.Fatalf("re-registered %+v", again)
		}
		if stored := must[*Node](t)(s.GetNode(ctx, n2.ID)); !stored.Expiry.IsZero() {
			t.Fatalf("stored expiry %v after re-registration", stored.Expiry)
		}
	})
}

func TestDNSData(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		rec := func(name, typ, value string) DNSRecordData {
			return DNSRecordData{Name: name, Type: typ, TTL: 60, Value: value}
		}
		a := must[*DNSRecord](t)(s.AddDNSRecord(ctx, rec("db.corp.example.com", "A", "node:alpha")))
		must[*DNSRecord](t)(s.AddDNSRecord(ctx, rec("db.corp.example.com", "A", "100.64.0.9")))
		if _, err := s.AddDNSRecord(ctx, rec("db.corp.example.com", "A", "100.64.0.9")); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate record: %v", err)
		}
		if _, err := s.AddDNSRecord(ctx, rec("db.corp.example.com", "CNAME", "alpha.warren.internal")); !errors.Is(err, ErrConflict) {
			t.Fatalf("CNAME beside A: %v", err)
		}
		must[*DNSRecord](t)(s.AddDNSRecord(ctx, rec("www.corp.example.com", "CNAME", "alpha.warren.internal")))
		if _, err := s.AddDNSRecord(ctx, rec("www.corp.example.com", "TXT", "x")); !errors.Is(err, ErrConflict) {
			t.Fatalf("record beside CNAME: %v", err)
		}
		if _, err := s.AddDNSRecord(ctx, rec("bad", "A", "1.2.3.4")); !errors.Is(err, ErrInvalid) {
			t.Fatalf("invalid record: %v", err)
		}
		must[*DNSZone](t)(s.AddDNSZone(ctx, "Corp.Example.com."))
		if _, err := s.AddDNSZone(ctx, "corp.example.com"); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate zone: %v", err)
		}
		rt := DNSRouteData{Domain: "lan.example.net", Resolvers: []netip.AddrPort{netip.MustParseAddrPort("198.18.9.53:53")}}
		must[*DNSRoute](t)(s.SetDNSRoute(ctx, rt))
		rt.Resolvers = append(rt.Resolvers, netip.MustParseAddrPort("[fd00::53]:53"))
		must[*DNSRoute](t)(s.SetDNSRoute(ctx, rt)) // replaces
		c, err := s.DNSConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Records) != 3 || c.Records[0].Value != "100.64.0.9" || len(c.Zones) != 1 || c.Zones[0] != "corp.example.com" ||
			len(c.Routes) != 1 || len(c.Routes[0].Resolvers) != 2 {
			t.Fatalf("config %+v", c)
		}
		// Records come back as stored, sorted by name, type and value.
		want := []DNSRecordData{rec("db.corp.example.com", "A", "100.64.0.9"), rec("db.corp.example.com", "A", "node:alpha"),
			rec("www.corp.example.com", "CNAME", "alpha.warren.internal")}
		if !slices.Equal(c.Records, want) {
			t.Fatalf("records %+v, want %+v", c.Records, want)
		}
		if err := s.DeleteDNSRecord(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteDNSRecord(ctx, a.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		if err := s.DeleteDNSZone(ctx, "corp.example.com"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteDNSRoute(ctx, "lan.example.net"); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.DNSConfig(ctx); len(c.Records) != 2 || len(c.Zones)+len(c.Routes) != 0 {
			t.Fatalf("after deletes %+v", c)
		}
	})
}

func TestServiceAddressesNeverAllocated(t *testing.T) {
	opts := Options{IPv4Prefix: netip.MustParsePrefix("100.100.100.96/29"), IPv6Prefix: netip.MustParsePrefix("fd00::50/124")}
	eachBackend(t, opts, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "u"))
		key, _, _ := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		svc := s.ServiceAddrs()
		if svc[0].String() != "100.100.100.100" || svc[1].String() != "fd00::53" {
			t.Fatalf("service addresses %v", svc)
		}
		for i := 1; i <= 5; i++ { // .97-.102 minus .100
			n, err := s.RegisterNode(ctx, key, nodeKeyOf(fmt.Sprint("k", i)), "h", RegisterOptions{})
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			if n.IPv4 == svc[0] || n.IPv6 == svc[1] {
				t.Fatalf("node %d got a service address: %v %v", i, n.IPv4, n.IPv6)
			}
		}
		if _, err := s.RegisterNode(ctx, key, nodeKeyOf("k6"), "h", RegisterOptions{}); !errors.Is(err, ErrAddressExhausted) {
			t.Fatalf("exhausted: %v", err)
		}
	})
}
