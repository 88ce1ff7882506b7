package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/store"
)

func filterOf(t *testing.T, m *netmap.NetworkMap) *filter.Spec {
	t.Helper()
	if m.PacketFilter == nil {
		return nil
	}
	s, err := filter.ParseSpec(m.PacketFilter)
	if err != nil {
		t.Fatalf("filter %s: %v", m.PacketFilter, err)
	}
	return s
}

// Each node gets its own filter: in its full map, and as a delta when the
// policy or another node's identity changes it; removing the policy
// removes every filter.
func TestPolicyFilters(t *testing.T) {
	checkLeaks(t)
	e := newEnv(t, server.Options{})
	ctx := context.Background()
	_, err := e.st.SetPolicy(ctx, `{
		"tagOwners": {"tag:db": ["alice@"]},
		"acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:db:5432"], "proto": "tcp"}],
	}`)
	if err != nil {
		t.Fatal(err)
	}
	tagged, _, err := e.st.CreatePreAuthKey(ctx, e.user.ID, store.PreAuthKeyOptions{Reusable: true, Tags: []string{"tag:db"}})
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	db := e.join("db", tagged)
	a := e.join("laptop", e.reuse)
	// The db node allows alice's laptop on 5432; the laptop allows nothing.
	m := db.waitMap("laptop in db's filter", pushWait, func(m *netmap.NetworkMap) bool {
		return strings.Contains(string(m.PacketFilter), a.self.Addresses[0].String())
	})
	if f := filterOf(t, m); len(f.Rules) != 1 || f.Rules[0].Ports[0] != (filter.PortRange{First: 5432, Last: 5432}) || len(f.Rules[0].Src) != 2 {
		t.Fatalf("db filter %s", m.PacketFilter)
	}
	m = a.waitMap("laptop's filter", pushWait, func(m *netmap.NetworkMap) bool { return m.PacketFilter != nil })
	if f := filterOf(t, m); len(f.Rules) != 0 {
		t.Fatalf("laptop filter %s", m.PacketFilter)
	}
	// A policy change reaches the nodes as deltas.
	if _, err := e.st.SetPolicy(ctx, `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}`); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	for _, n := range []*node{a, db} {
		n.waitMap("policy change", pushWait, func(m *netmap.NetworkMap) bool {
			f := filterOf(t, m)
			return f != nil && len(f.Rules) == 1 && len(f.Rules[0].Ports) == 1 && f.Rules[0].Ports[0].First == 22
		})
	}
	// A new node of a user the rules name changes the filters of their targets.
	if _, err := e.st.SetPolicy(ctx, `{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["*:*"]}]}`); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	c := e.join("phone", e.reuse)
	db.waitMap("phone in db's filter", pushWait, func(m *netmap.NetworkMap) bool {
		return strings.Contains(string(m.PacketFilter), c.self.Addresses[0].String())
	})
	// No policy: no filter.
	if _, err := e.st.SetPolicy(ctx, ""); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	for _, n := range []*node{a, db, c} {
		n.waitMap("no filter", pushWait, func(m *netmap.NetworkMap) bool { return m.PacketFilter == nil })
	}
}
