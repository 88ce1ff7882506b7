package localapi

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// routesBackend is backend plus the routes endpoints.
type routesBackend struct {
	backend
	rs RouteStatus
}

func (b *routesBackend) RouteStatus() *RouteStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	rs := b.rs
	return &rs
}

func (b *routesBackend) SetRoutePrefs(_ context.Context, p RoutePrefs) (*RouteStatus, error) {
	if p.ExitNode != nil && *p.ExitNode == "nosuch" {
		return nil, errors.New(`--exit-node: no peer "nosuch"`)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.AdvertiseRoutes != nil {
		b.rs.AdvertiseRoutes = *p.AdvertiseRoutes
	}
	if p.AcceptRoutes != nil {
		b.rs.AcceptRoutes = *p.AcceptRoutes
	}
	rs := b.rs
	return &rs, nil
}

func TestRoutesRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	l, gid, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	b := &routesBackend{backend: backend{st: Status{BackendState: StateRunning, Peers: []PeerStatus{}}}}
	go Serve(l, b, gid, logtest.T(t))
	t.Cleanup(func() { l.Close() })
	c := NewClient(path)
	ctx := context.Background()
	yes := true
	routes := []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}
	st, err := c.SetRoutePrefs(ctx, RoutePrefs{AdvertiseRoutes: &routes, AcceptRoutes: &yes})
	if err != nil || !slices.Equal(st.AdvertiseRoutes, routes) || !st.AcceptRoutes {
		t.Fatalf("set: %+v %v", st, err)
	}
	if st, err := c.Routes(ctx); err != nil || !slices.Equal(st.AdvertiseRoutes, routes) {
		t.Fatalf("get: %+v %v", st, err)
	}
	bad := "nosuch"
	if _, err := c.SetRoutePrefs(ctx, RoutePrefs{ExitNode: &bad}); err == nil || err.Error() != `--exit-node: no peer "nosuch"` {
		t.Fatalf("refusal: %v", err)
	}
	if _, err := c.Status(ctx); err != nil { // the rest of the API is still served
		t.Fatal(err)
	}
}
