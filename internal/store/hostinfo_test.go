package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// A node's reported OS and version are stored, replaced by the next
// report, go with the node, and are no change of the maps; bad values and
// unknown nodes are refused.
func TestHostinfo(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _ := must2(t)(s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true}))
		n := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey:1"), "laptop", RegisterOptions{}))
		before := must[int64](t)(s.LastChange(ctx))
		if err := s.SetHostinfo(ctx, n.ID, Hostinfo{OS: "linux", Version: "0.9.0"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetHostinfo(ctx, n.ID, Hostinfo{OS: "linux", Version: "1.0.0"}); err != nil {
			t.Fatal(err)
		}
		got := must[map[int64]Hostinfo](t)(s.ListHostinfo(ctx))
		if h := got[n.ID]; h.OS != "linux" || h.Version != "1.0.0" || h.Updated.IsZero() || len(got) != 1 {
			t.Fatalf("hostinfo %+v", got)
		}
		if after := must[int64](t)(s.LastChange(ctx)); after != before {
			t.Fatalf("a hostinfo report logged changes (%d → %d)", before, after)
		}
		for _, h := range []Hostinfo{{OS: strings.Repeat("x", MaxHostinfoField+1)}, {Version: "1.0\n"}} {
			if err := s.SetHostinfo(ctx, n.ID, h); !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: %v", h, err)
			}
		}
		if err := s.SetHostinfo(ctx, n.ID+100, Hostinfo{OS: "linux"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown node: %v", err)
		}
		if err := s.DeleteNode(ctx, n.ID); err != nil {
			t.Fatal(err)
		}
		if got := must[map[int64]Hostinfo](t)(s.ListHostinfo(ctx)); len(got) != 0 {
			t.Fatalf("hostinfo of a deleted node: %+v", got)
		}
	})
}
