package store

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestNodeKeysTyped: the store hands out a node's key and its disco key
// as distinct key types, parsed once when read, not as strings each caller
// re-parses (and could mix up).
func TestNodeKeysTyped(t *testing.T) {
	nk := reflect.TypeOf(Node{}.NodeKey)
	dk := reflect.TypeOf(Node{}.DiscoKey)
	if nk.Kind() == reflect.String || dk.Kind() == reflect.String {
		t.Fatalf("keys are strings: NodeKey %v, DiscoKey %v", nk, dk)
	}
	if nk == dk || nk.AssignableTo(dk) || dk.AssignableTo(nk) {
		t.Fatalf("NodeKey (%v) and DiscoKey (%v) can be mixed", nk, dk)
	}
}

// TestNodeKeysParsedOnRead: keys come back as written; a stored key that
// does not parse (written by hand or an old version) reads as the zero key
// instead of failing the whole list, and the zero key is refused on write.
func TestNodeKeysParsedOnRead(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		ak, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		a := must[*Node](t)(s.RegisterNode(ctx, ak, nodeKeyOf("a"), "a", RegisterOptions{}))
		b := must[*Node](t)(s.RegisterNode(ctx, ak, nodeKeyOf("b"), "b", RegisterOptions{}))
		if err := s.SetDiscoKey(ctx, a.ID, discoKeyOf("a")); err != nil {
			t.Fatal(err)
		}
		got := must[*Node](t)(s.GetNodeByKey(ctx, nodeKeyOf("a")))
		if got.NodeKey != nodeKeyOf("a") || got.DiscoKey != discoKeyOf("a") {
			t.Fatalf("read back %v / %v", got.NodeKey, got.DiscoKey)
		}
		if _, err := s.db.ExecContext(ctx, s.q("UPDATE nodes SET node_key = ?, disco_key = ? WHERE id = ?"), "not a key", "nor this", b.ID); err != nil {
			t.Fatal(err)
		}
		ns, err := s.ListNodes(ctx, 0)
		if err != nil || len(ns) != 2 {
			t.Fatalf("list with a malformed key: %d nodes, %v", len(ns), err)
		}
		for _, n := range ns {
			if n.ID == b.ID && (!n.NodeKey.IsZero() || !n.DiscoKey.IsZero() || n.NodeKey.Text() != "") {
				t.Fatalf("malformed keys read as %v / %v", n.NodeKey, n.DiscoKey)
			}
		}
		if _, err := s.RegisterNode(ctx, ak, pubkey.Node{}, "z", RegisterOptions{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("register with the zero key: %v", err)
		}
		if err := s.RotateNodeKey(ctx, a.ID, pubkey.Node{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("rotate to the zero key: %v", err)
		}
	})
}
