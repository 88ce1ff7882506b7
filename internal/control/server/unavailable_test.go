package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// downStore is the server's store with the database out of reach: while
// refusing > 0, the node calls fail as the store fails then (ErrUnavailable
// around the driver's error, which names the database's host), and each
// failure counts refusing down; at 0 the database is back.
type downStore struct {
	server.Store
	refusing atomic.Int64
	refused  atomic.Int64
}

const dbHost = "db.internal.example:5432"

func (s *downStore) down(op string) error {
	if s.refusing.Add(-1) < 0 {
		s.refusing.Store(0)
		return nil
	}
	s.refused.Add(1)
	return fmt.Errorf("%s: %w: dial tcp %s: connect: connection refused", op, store.ErrUnavailable, dbHost)
}

func (s *downStore) GetNodeByKey(ctx context.Context, key pubkey.Node) (*store.Node, error) {
	if err := s.down("get node"); err != nil {
		return nil, err
	}
	return s.Store.GetNodeByKey(ctx, key)
}

func (s *downStore) RegisterNode(ctx context.Context, authKey string, key pubkey.Node, hostname string, o store.RegisterOptions) (*store.Node, error) {
	if err := s.down("register node"); err != nil {
		return nil, err
	}
	return s.Store.RegisterNode(ctx, authKey, key, hostname, o)
}

func (s *downStore) DeleteNode(ctx context.Context, id int64) error {
	if err := s.down("delete node"); err != nil {
		return err
	}
	return s.Store.DeleteNode(ctx, id)
}

// TestDatabaseUnavailable: while the server cannot reach its database, a
// node asking to join, rotate its key or log out is told so in fixed
// words (not "internal server error", and not the database's address),
// and the client asks again until the database is back or its context
// ends.
func TestDatabaseUnavailable(t *testing.T) {
	st := &downStore{}
	e := newEnv(t, server.Options{PollInterval: time.Hour})
	e.WrapStore = func(s server.Store) server.Store { st.Store = s; return st }
	e.start()
	unavailable := func(what string, err error) {
		t.Helper()
		var re *client.RegisterError
		if !errors.As(err, &re) || re.Code != proto.CodeUnavailable {
			t.Fatalf("%s with the database down: %v, want code %q", what, err, proto.CodeUnavailable)
		}
		if !strings.Contains(re.Message, "cannot reach its database") || strings.Contains(re.Message, dbHost) {
			t.Fatalf("%s: message %q", what, re.Message)
		}
	}

	// givesUp runs a request while the database stays down and ends its
	// context once the server refused it twice (the client asked again):
	// the error is the server's last answer, whether the client was
	// waiting or asking again when the context ended.
	givesUp := func(call func(ctx context.Context) error) error {
		t.Helper()
		st.refusing.Store(1 << 30)
		st.refused.Store(0)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		wait.For(t, pushWait, "the client asking again", func() bool { return st.refused.Load() >= 2 })
		cancel()
		return <-done
	}

	// Down for longer than the node waits: the answer says why.
	c := e.client(genKey(t), "", "")
	unavailable("register", givesUp(func(ctx context.Context) error {
		_, err := c.Register(ctx, e.reuse, "alpha", nil)
		return err
	}))
	if !e.logged("register failed: the database is unreachable") {
		t.Fatal("the cause is not in the server's log")
	}
	if strings.Contains(e.Log.Text(), "ERROR") {
		t.Fatal("a passing condition logged as an error")
	}

	// Back after three refusals: the same call succeeds.
	st.refusing.Store(3)
	st.refused.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	self, err := c.Register(ctx, e.reuse, "alpha", nil)
	if err != nil || self.Name != "alpha" {
		t.Fatalf("register once the database is back: %v %v", self, err)
	}
	if n := st.refused.Load(); n != 3 {
		t.Fatalf("%d refusals, want 3", n)
	}

	// Key rotation: told why, then it goes through.
	next := genKey(t)
	unavailable("rotate key", givesUp(func(ctx context.Context) error {
		_, err := c.RotateKey(ctx, next)
		return err
	}))
	st.refusing.Store(2)
	if n, err := c.RotateKey(ctx, next); err != nil || n.Key.PublicKey != next.PublicKey() {
		t.Fatalf("rotate once the database is back: %v %v", n, err)
	}

	// Logout under the new key.
	cfg := c.Config()
	cfg.NodeKey = next
	c2, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	unavailable("logout", givesUp(c2.Logout))
	st.refusing.Store(2)
	if err := c2.Logout(ctx); err != nil {
		t.Fatalf("logout once the database is back: %v", err)
	}
	if _, err := e.st.GetNodeByKey(ctx, pubkey.Node{PublicKey: next.PublicKey()}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the node is still stored after its logout: %v", err)
	}
}

// exhaustedStore refuses every registration: no free addresses.
type exhaustedStore struct{ server.Store }

func (exhaustedStore) RegisterNode(context.Context, string, pubkey.Node, string, store.RegisterOptions) (*store.Node, error) {
	return nil, fmt.Errorf("register node: %w", store.ErrAddressExhausted)
}

// TestRegisterNoFreeAddresses: a store refusal that is the server's
// trouble, not the node's, is still answered in its own words.
func TestRegisterNoFreeAddresses(t *testing.T) {
	e := newEnv(t, server.Options{PollInterval: time.Hour})
	e.WrapStore = func(s server.Store) server.Store { return exhaustedStore{s} }
	e.start()
	ctx, cancel := context.WithTimeout(context.Background(), pushWait)
	defer cancel()
	_, err := e.client(genKey(t), "", "").Register(ctx, e.reuse, "alpha", nil)
	var re *client.RegisterError
	if !errors.As(err, &re) || re.Code != proto.CodeInternal || re.Message != "registration refused: the deployment has no free addresses" {
		t.Fatalf("register with no free addresses: %v", err)
	}
}
