package cli

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
)

// TestStatusWarnsBeforeExpiry: status warns from 7 days before the node's
// key expires (and after), not earlier; a node waiting for a sign-in shows
// the URL.
func TestStatusWarnsBeforeExpiry(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		expiry time.Time
		want   string // "" : no warning
	}{
		{time.Time{}, ""},
		{now.Add(8 * 24 * time.Hour), ""},
		{now.Add(6 * 24 * time.Hour), "# warning: this node's key expires in 144h0m0s"},
		{now.Add(-time.Hour), "# warning: this node's key has expired; run `warren up --force-reauth`"},
	} {
		var b bytes.Buffer
		st := &localapi.Status{BackendState: localapi.StateRunning, Connected: true,
			Self: &localapi.PeerStatus{Name: "laptop", User: "alice", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, Expiry: c.expiry}}
		writeStatus(&b, st, now)
		got := b.String()
		if c.want == "" && strings.Contains(got, "warning") || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("expiry %v: status\n%s\nwant %q", c.expiry, got, c.want)
		}
	}
	var b bytes.Buffer
	writeStatus(&b, &localapi.Status{BackendState: localapi.StateNeedsLogin, AuthURL: "https://w.example/oidc/start?reg=abc"}, now)
	if !strings.Contains(b.String(), "sign in at https://w.example/oidc/start?reg=abc") {
		t.Errorf("waiting status: %q", b.String())
	}
}
