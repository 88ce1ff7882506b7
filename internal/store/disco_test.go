package store

import (
	"context"
	"errors"
	"testing"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// TestDiscoKeyHeldOnce: a disco key another node holds is refused with
// ErrConflict; the holder keeps it; a node may report its own again, and
// "" (no probing) is never a conflict.
func TestDiscoKeyHeldOnce(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		v := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:v"), "victim", RegisterOptions{}))
		m := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:m"), "rogue", RegisterOptions{}))
		if err := s.SetDiscoKey(ctx, v.ID, discoKeyOf("disco:v")); err != nil {
			t.Fatal(err)
		}
		if err := s.SetDiscoKey(ctx, m.ID, discoKeyOf("disco:v")); !errors.Is(err, ErrConflict) {
			t.Fatalf("another node's disco key: %v, want ErrConflict", err)
		}
		if err := s.SetDiscoKey(ctx, v.ID, discoKeyOf("disco:v")); err != nil {
			t.Fatalf("the holder reporting its key again: %v", err)
		}
		for _, id := range []int64{v.ID, m.ID} {
			if err := s.SetDiscoKey(ctx, id, pubkey.Disco{}); err != nil {
				t.Fatalf("no disco key: %v", err)
			}
		}
		if err := s.SetDiscoKey(ctx, 9999, discoKeyOf("disco:x")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing node: %v", err)
		}
		got := must[*Node](t)(s.GetNodeByKey(ctx, nodeKeyOf("nodekey:m")))
		if !got.DiscoKey.IsZero() {
			t.Fatalf("rogue's disco key %q", got.DiscoKey)
		}
	})
}
