package server_test

import (
	"context"
	"testing"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// relayURLs lists the URLs of a map's relay regions, in order.
func relayURLs(m *netmap.NetworkMap) []string {
	var out []string
	for _, r := range m.Relays {
		out = append(out, r.URL)
	}
	return out
}

func hasRelays(want ...string) func(*netmap.NetworkMap) bool {
	return func(m *netmap.NetworkMap) bool {
		got := relayURLs(m)
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if got[i] != want[i] {
				return false
			}
		}
		return true
	}
}

// TestReplicaRelaysInEveryMap: each replica's embedded relay is in the
// maps of the nodes of every replica, in the same order (so every node
// has the same home relay, the first); a replica that dies without
// leaving (its database sessions gone) takes its relay out of every map
// once its heartbeat lapsed, and its nodes' home moves to the next relay;
// a replica started later adds its relay after the others'.
func TestReplicaRelaysInEveryMap(t *testing.T) {
	l := newReplicaLab(t, 0)
	l.relays = true
	ra, rb := l.start("a"), l.start("b")
	a := l.join("a", l.urls(0))
	b := l.join("b", l.urls(1))
	ua, ub := relayURLOf(ra), relayURLOf(rb)
	for _, n := range []*node{a, b} {
		n.waitMap("both replicas' relays, a's first", pushWait, hasRelays(ua, ub))
	}
	m := b.c.NetworkMap()
	if m.Relays[0].ID == m.Relays[1].ID || m.Relays[0].Key != (pubkey.Relay{PublicKey: l.key.PublicKey()}) {
		t.Fatalf("relay regions %+v", m.Relays)
	}

	// Replica a dies: its store goes first, so it cannot leave cleanly.
	ra.st.Close()
	ra.stop()
	for _, n := range []*node{a, b} {
		n.waitMap("a's relay gone, b's the home relay", pushWait, hasRelays(ub))
	}

	// A replica started later comes after b.
	rc := l.start("c")
	b.waitMap("c's relay after b's", pushWait, hasRelays(ub, relayURLOf(rc)))

	// c leaves cleanly: its relay leaves at once.
	rc.stop()
	b.waitMap("c's relay gone", pushWait, hasRelays(ub))
	if err := l.st.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func relayURLOf(r *replica) string { return "http://relay-" + r.name + ".test:8080" }
