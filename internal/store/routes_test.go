package store

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestRoutes(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, s *Store, _ string) {
		ctx := context.Background()
		u := must[*User](t)(s.CreateUser(ctx, "alice"))
		key, _, err := s.CreatePreAuthKey(ctx, u.ID, PreAuthKeyOptions{Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		n := must[*Node](t)(s.RegisterNode(ctx, key, nodeKeyOf("nodekey-1"), "router", RegisterOptions{}))
		if n.AdvertisedRoutes != nil || n.ApprovedRoutes != nil || n.EnabledRoutes() != nil {
			t.Fatalf("fresh node has routes %+v", n)
		}
		for _, bad := range [][]netip.Prefix{pfxs("10.0.0.1/24"), {netip.Prefix{}}, pfxs("::ffff:10.0.0.0/120")} {
			if err := s.SetAdvertisedRoutes(ctx, n.ID, bad); !errors.Is(err, ErrInvalid) {
				t.Fatalf("advertise %v: %v", bad, err)
			}
			if _, err := s.ApproveRoutes(ctx, n.ID, bad, nil); !errors.Is(err, ErrInvalid) {
				t.Fatalf("approve %v: %v", bad, err)
			}
		}
		if err := s.SetAdvertisedRoutes(ctx, n.ID, pfxs("198.19.0.0/24", "0.0.0.0/0", "::/0", "198.19.0.0/24")); err != nil {
			t.Fatal(err)
		}
		got := must[*Node](t)(s.GetNode(ctx, n.ID))
		if want := pfxs("0.0.0.0/0", "198.19.0.0/24", "::/0"); !slices.Equal(got.AdvertisedRoutes, want) {
			t.Fatalf("advertised %v, want %v", got.AdvertisedRoutes, want)
		}
		if got.EnabledRoutes() != nil {
			t.Fatalf("enabled before approval: %v", got.EnabledRoutes())
		}
		// Pre-approval of a route not advertised is kept, not enabled.
		a := must[*Node](t)(s.ApproveRoutes(ctx, n.ID, pfxs("198.19.0.0/24", "10.9.0.0/16"), nil))
		if want := pfxs("10.9.0.0/16", "198.19.0.0/24"); !slices.Equal(a.ApprovedRoutes, want) {
			t.Fatalf("approved %v, want %v", a.ApprovedRoutes, want)
		}
		if want := pfxs("198.19.0.0/24"); !slices.Equal(a.EnabledRoutes(), want) {
			t.Fatalf("enabled %v, want %v", a.EnabledRoutes(), want)
		}
		a = must[*Node](t)(s.ApproveRoutes(ctx, n.ID, pfxs("0.0.0.0/0", "::/0"), pfxs("10.9.0.0/16")))
		got = must[*Node](t)(s.GetNode(ctx, n.ID))
		if want := pfxs("0.0.0.0/0", "198.19.0.0/24", "::/0"); !slices.Equal(got.ApprovedRoutes, want) || !slices.Equal(got.EnabledRoutes(), want) || !slices.Equal(a.ApprovedRoutes, want) {
			t.Fatalf("approved %v enabled %v", got.ApprovedRoutes, got.EnabledRoutes())
		}
		// The node stops advertising: nothing enabled, approval kept.
		if err := s.SetAdvertisedRoutes(ctx, n.ID, nil); err != nil {
			t.Fatal(err)
		}
		got = must[*Node](t)(s.GetNode(ctx, n.ID))
		if got.EnabledRoutes() != nil || len(got.ApprovedRoutes) != 3 {
			t.Fatalf("after withdrawal: approved %v enabled %v", got.ApprovedRoutes, got.EnabledRoutes())
		}
		if _, err := s.ApproveRoutes(ctx, n.ID+100, pfxs("10.0.0.0/8"), nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown node: %v", err)
		}
	})
}
