package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestReregisterKeyRules: registering an existing node key again obeys the
// auth key's rules. An expired node (an admin's `nodes expire`) comes back
// only with a key it may still use — not with the one-off key it joined
// with — and its expiry then follows the registration; a node that has not
// expired keeps its expiry, may repeat the registration with the key it
// joined with (a retry), but another one-off key already used is refused.
func TestReregisterKeyRules(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	eachBackend(t, Options{Now: clock}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "erin"))
		once, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := must[*Node](t)(s.RegisterNode(ctx, once, nodeKeyOf("nodekey:e"), "e", RegisterOptions{}))
		// A retry with the same key while the node is live: the same node.
		if again, err := s.RegisterNode(ctx, once, nodeKeyOf("nodekey:e"), "e", RegisterOptions{}); err != nil || again.ID != n.ID {
			t.Fatalf("retry with the joining key: %+v, %v", again, err)
		}
		// The admin expires it: the used one-off key no longer brings it back.
		if err := s.SetNodeExpiry(ctx, n.ID, now.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RegisterNode(ctx, once, nodeKeyOf("nodekey:e"), "e", RegisterOptions{}); !errors.Is(err, ErrAuthKeyUsed) {
			t.Fatalf("expired node with its used one-off key: %v", err)
		}
		if got := must[*Node](t)(s.GetNode(ctx, n.ID)); !got.Expiry.Equal(now.Add(-time.Second)) {
			t.Fatalf("expiry after a refused re-registration: %v", got.Expiry)
		}
		// An expired auth key does not either.
		late, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true, Expiry: now.Add(-time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.RegisterNode(ctx, late, nodeKeyOf("nodekey:e"), "e", RegisterOptions{}); !errors.Is(err, ErrAuthKeyExpired) {
			t.Fatalf("expired node with an expired key: %v", err)
		}
		// A fresh one-off key does, is consumed, and the expiry is the
		// registration's.
		fresh, freshKey, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		back := must[*Node](t)(s.RegisterNode(ctx, fresh, nodeKeyOf("nodekey:e"), "e", RegisterOptions{Expiry: now.Add(time.Hour)}))
		if back.ID != n.ID || back.IPv4 != n.IPv4 || !back.Expiry.Equal(now.Add(time.Hour)) || back.AuthKeyID != freshKey.ID {
			t.Fatalf("came back as %+v", back)
		}
		if got := must[*Node](t)(s.GetNode(ctx, n.ID)); !got.Expiry.Equal(now.Add(time.Hour)) || got.AuthKeyID != freshKey.ID {
			t.Fatalf("stored after coming back: %+v", got)
		}
		if k := authKeyByID(t, s, u.ID, freshKey.ID); k.UsedCount != 1 {
			t.Fatalf("fresh key used %d times", k.UsedCount)
		}
		if _, err := s.RegisterNode(ctx, fresh, nodeKeyOf("nodekey:other"), "o", RegisterOptions{}); !errors.Is(err, ErrAuthKeyUsed) {
			t.Fatalf("the consumed key registers another node: %v", err)
		}
		// Live (expiry in the future): another used one-off key is refused,
		// and the expiry stays what it is.
		if _, err := s.RegisterNode(ctx, once, nodeKeyOf("nodekey:e"), "e", RegisterOptions{}); !errors.Is(err, ErrAuthKeyUsed) {
			t.Fatalf("live node with another used one-off key: %v", err)
		}
		reuse, reuseKey, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := must[*Node](t)(s.RegisterNode(ctx, reuse, nodeKeyOf("nodekey:e"), "e", RegisterOptions{})); !got.Expiry.Equal(now.Add(time.Hour)) {
			t.Fatalf("live node's expiry reset by a re-registration: %v", got.Expiry)
		}
		if k := authKeyByID(t, s, u.ID, reuseKey.ID); k.UsedCount != 1 {
			t.Fatalf("reusable key used %d times after a re-registration", k.UsedCount)
		}
	})
}

func authKeyByID(t *testing.T, s *Store, userID, id int64) *PreAuthKey {
	t.Helper()
	for _, k := range must[[]*PreAuthKey](t)(s.ListPreAuthKeys(context.Background(), userID)) {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("auth key %d not found", id)
	return nil
}

// TestRelayScopedAPIKey: a relay key validates with its scope, is listed
// with it, and rewriting its kind to an admin key's does not validate.
func TestRelayScopedAPIKey(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		key, k, err := s.CreateScopedAPIKey(ctx, ScopeRelay, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, "wrly_") || k.Scope != ScopeRelay {
			t.Fatalf("relay key %q scope %q", key, k.Scope)
		}
		got := must[*APIKey](t)(s.ValidateAPIKey(ctx, key))
		if got.ID != k.ID || got.Scope != ScopeRelay {
			t.Fatalf("validated %+v", got)
		}
		if _, err := s.ValidateAPIKey(ctx, "wapi_"+strings.TrimPrefix(key, "wrly_")); !errors.Is(err, ErrAuthKeyInvalid) {
			t.Fatalf("relay key passed off as an admin key: %v", err)
		}
		admin := must[*APIKey](t)(s.ValidateAPIKey(ctx, must[string](t)(func() (string, error) { k, _, err := s.CreateAPIKey(ctx, time.Time{}); return k, err }())))
		if admin.Scope != ScopeAdmin {
			t.Fatalf("admin key scope %q", admin.Scope)
		}
		ks := must[[]*APIKey](t)(s.ListAPIKeys(ctx))
		if len(ks) != 2 || ks[0].Scope != ScopeRelay || ks[1].Scope != ScopeAdmin {
			t.Fatalf("listed %+v %+v", ks[0], ks[1])
		}
		if _, _, err := s.CreateScopedAPIKey(ctx, "root", time.Time{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("unknown scope: %v", err)
		}
	})
}
