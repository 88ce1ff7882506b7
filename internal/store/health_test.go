package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/store/storetest"
)

func TestPing(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, dsn string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// A SQLite file moved away or replaced under a running store is "gone"
// (its open connections would go on writing to the old file); moving it
// back makes the store healthy again.
func TestPingSQLiteFileGone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "warren.db")
	s, err := Open(context.Background(), "sqlite:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("moved away: %v", err)
	}
	// Another database at the same path is not ours.
	other, err := Open(ctx, "sqlite:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "was replaced") {
		t.Fatalf("replaced: %v", err)
	}
	if err := os.Rename(path+".moved", path); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("moved back: %v", err)
	}
}

// A store whose database cannot be reached fails the ping (here: closed).
func TestPingClosed(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			s, err := Open(context.Background(), b.DSN(t), Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if err := s.Ping(context.Background()); err == nil {
				t.Fatal("ping of a closed store succeeded")
			}
		})
	}
}
