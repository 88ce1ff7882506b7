package store

import (
	"context"
	"errors"
	"testing"
)

// TestPeerRelayApproval: a node's relay port and its approval are stored
// apart; it is a peer relay only with both, and each write is in the
// change log (the server follows it).
func TestPeerRelayApproval(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		n := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey-1"), "relay", RegisterOptions{}))
		if n.RelayPort != 0 || n.RelayApproved || n.IsPeerRelay() {
			t.Fatalf("fresh node is a relay: %+v", n)
		}
		// Pre-approval: approved, no port yet.
		a := must[*Node](t)(s.ApproveRelay(ctx, n.ID, true))
		if !a.RelayApproved || a.IsPeerRelay() {
			t.Fatalf("approved without a port: %+v", a)
		}
		before, err := s.LastChange(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetRelayPort(ctx, n.ID, 3480); err != nil {
			t.Fatal(err)
		}
		got := must[*Node](t)(s.GetNode(ctx, n.ID))
		if got.RelayPort != 3480 || !got.IsPeerRelay() {
			t.Fatalf("after the port: %+v", got)
		}
		if after, _ := s.LastChange(ctx); after <= before {
			t.Fatal("setting the relay port left no change in the log")
		}
		got = must[*Node](t)(s.ApproveRelay(ctx, n.ID, false))
		if got.IsPeerRelay() || got.RelayPort != 3480 {
			t.Fatalf("after unapproving: %+v", got)
		}
		if _, err := s.ApproveRelay(ctx, n.ID+100, true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("approving an unknown node: %v", err)
		}
	})
}
