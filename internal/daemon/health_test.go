package daemon

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/localapi"
)

// Each problem is its own condition in status: several at once are all
// listed (sorted), and each clears when its own cause goes, not when
// another part of the daemon reports.
func TestHealthConditions(t *testing.T) {
	cs := startServer(t)
	td := startDaemon(t, cs)
	td.up("node")
	waitFor(t, "a map", func() bool { return td.d.Status().Self.Name != "" })

	has := func(h []string, sub string) bool {
		return slices.ContainsFunc(h, func(s string) bool { return strings.Contains(s, sub) })
	}
	apply := func(filter string, addrErr error) []string {
		td.router.get(func(r *fakeRouter) { r.addrErr = addrErr })
		td.d.mu.Lock()
		nm := *td.d.nm
		nm.PacketFilter = []byte(filter)
		td.d.applyMapLocked(&nm)
		td.d.mu.Unlock()
		return td.d.Status().Health
	}

	// Two problems in one map: both listed, in order.
	h := apply(`{"unreadable`, errors.New("netlink: address refused"))
	if !has(h, "unreadable packet filter") || !has(h, "address refused") {
		t.Fatalf("health %q: want both the filter and the interface problem", h)
	}
	if !slices.IsSorted(h) {
		t.Errorf("health %q not sorted", h)
	}

	// The interface recovers: its line goes, the filter's stays.
	h = apply(`{"unreadable`, nil)
	if has(h, "address refused") || !has(h, "unreadable packet filter") {
		t.Fatalf("after the interface recovered: health %q", h)
	}

	// A problem set outside map application (the exit node preference)
	// and the filter's clear independently.
	pref := "nosuchpeer"
	td.d.mu.Lock()
	td.d.prefs.ExitNode = pref
	td.d.mu.Unlock()
	h = apply(`{"unreadable`, nil)
	if !has(h, "exit node nosuchpeer unavailable") || !has(h, "unreadable packet filter") {
		t.Fatalf("exit and filter problems: health %q", h)
	}
	empty := ""
	if _, err := td.d.SetRoutePrefs(t.Context(), localapi.RoutePrefs{ExitNode: &empty}); err != nil {
		t.Fatal(err)
	}
	h = apply("", nil)
	if len(h) != 0 {
		t.Fatalf("every cause gone: health %q", h)
	}

	// Down: the problems of the map go with it.
	if h := apply(`{"unreadable`, errors.New("netlink: address refused")); len(h) != 2 {
		t.Fatalf("health %q, want two problems", h)
	}
	if err := td.d.Down(t.Context()); err != nil {
		t.Fatal(err)
	}
	if h := td.d.Status().Health; len(h) != 0 {
		t.Fatalf("down: health %q, want none", h)
	}
}
