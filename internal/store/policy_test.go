package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestPolicyVersions(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		p := must[*StoredPolicy](t)(s.Policy(ctx))
		if p.ID != 0 || p.Text != "" {
			t.Fatalf("fresh store has policy %+v", p)
		}
		var last *StoredPolicy
		for i := range PolicyHistory + 3 {
			last = must[*StoredPolicy](t)(s.SetPolicy(ctx, fmt.Sprintf(`{"hosts": {"h%d": "10.0.0.%d"}}`, i, i)))
		}
		got := must[*StoredPolicy](t)(s.Policy(ctx))
		if got.ID != last.ID || got.Text != last.Text || !got.Created.Equal(last.Created) {
			t.Fatalf("got %+v, want %+v", got, last)
		}
		var n int
		if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM policies").Scan(&n); err != nil || n != PolicyHistory {
			t.Fatalf("%d versions kept (%v), want %d", n, err, PolicyHistory)
		}
		// Removing the policy is a version too.
		must[*StoredPolicy](t)(s.SetPolicy(ctx, ""))
		if got := must[*StoredPolicy](t)(s.Policy(ctx)); got.Text != "" || got.ID <= last.ID {
			t.Fatalf("after removal: %+v", got)
		}
	})
}

func TestTags(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		for _, bad := range [][]string{{"db"}, {"tag:"}, {"tag:a b"}, {"tag:a,tag:b"}} {
			if _, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Tags: bad}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("tags %q: %v", bad, err)
			}
		}
		key, k, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true, Tags: []string{"tag:web", "tag:db", "tag:web"}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(k.Tags, []string{"tag:db", "tag:web"}) {
			t.Fatalf("key tags %q", k.Tags)
		}
		keys := must[[]*PreAuthKey](t)(s.ListPreAuthKeys(ctx, u.ID))
		if len(keys) != 1 || !slices.Equal(keys[0].Tags, k.Tags) {
			t.Fatalf("listed %+v", keys[0])
		}
		n := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey-1"), "db1", RegisterOptions{}))
		if !slices.Equal(n.Tags, k.Tags) {
			t.Fatalf("registered node tags %q", n.Tags)
		}
		if got := must[*Node](t)(s.GetNode(ctx, n.ID)); !slices.Equal(got.Tags, k.Tags) {
			t.Fatalf("stored node tags %q", got.Tags)
		}
		// Untagged key, untagged node; re-registering with it drops the tags.
		plain, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		n2 := must[*Node](t)(s.RegisterNode(ctx, plain, nodeKeyOf("nodekey-2"), "laptop", RegisterOptions{}))
		if n2.Tags != nil {
			t.Fatalf("untagged node has %q", n2.Tags)
		}
		must[*Node](t)(s.RegisterNode(ctx, plain, nodeKeyOf("nodekey-1"), "db1", RegisterOptions{}))
		if got := must[*Node](t)(s.GetNode(ctx, n.ID)); got.Tags != nil {
			t.Fatalf("re-registered node keeps %q", got.Tags)
		}
	})
}
