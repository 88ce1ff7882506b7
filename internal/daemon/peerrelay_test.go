package daemon

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func relayTestNode(t *testing.T, id uint64, relayPort uint16, eps ...string) netmap.Node {
	t.Helper()
	k, _ := noise.GeneratePrivateKey()
	d, _ := noise.GeneratePrivateKey()
	n := netmap.Node{ID: id, Key: pubkey.Node{PublicKey: k.PublicKey()}, DiscoKey: pubkey.Disco{PublicKey: d.PublicKey()}, RelayPort: relayPort}
	for _, e := range eps {
		n.Endpoints = append(n.Endpoints, netip.MustParseAddrPort(e))
	}
	return n
}

// TestPeerRelaysFromMap: which peer relays a node uses and whom it serves
// follow the map: approved relays (RelayPort) at each of their addresses,
// public first; with a policy only those its filter spec names; with a
// filter it cannot read, none (fail closed).
func TestPeerRelaysFromMap(t *testing.T) {
	relay := relayTestNode(t, 2, 3480, "10.0.0.5:41641", "198.18.4.2:41641", "198.18.4.2:5555", "127.0.0.1:41641")
	other := relayTestNode(t, 3, 0, "198.18.5.2:41641")
	nm := &netmap.NetworkMap{Self: relayTestNode(t, 1, 0), Peers: []netmap.Node{relay, other}}

	infos := peerRelaysFor(nm) // no policy: every approved relay
	if len(infos) != 2 || infos[0].Addr != netip.MustParseAddrPort("198.18.4.2:3480") || infos[1].Addr != netip.MustParseAddrPort("10.0.0.5:3480") ||
		infos[0].Key != relay.Key || infos[0].Disco != relay.DiscoKey {
		t.Fatalf("no policy: %+v", infos)
	}
	if c := relayClientsFor(nm); c != nil {
		t.Fatalf("a node that is no approved relay serves %+v", c)
	}

	spec := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	nm.PacketFilter = spec(map[string]any{"rules": []any{}, "peerRelays": []uint64{2}})
	if got := peerRelaysFor(nm); len(got) != 2 {
		t.Fatalf("allowed by the spec: %+v", got)
	}
	nm.PacketFilter = spec(map[string]any{"rules": []any{}, "peerRelays": []uint64{7}})
	if got := peerRelaysFor(nm); len(got) != 0 {
		t.Fatalf("not named in the spec, used anyway: %+v", got)
	}
	nm.PacketFilter = json.RawMessage(`{"rules": "not a list"}`)
	if got := peerRelaysFor(nm); len(got) != 0 {
		t.Fatalf("unreadable filter: relays used %+v", got)
	}

	// The relay's own view: it serves the clients its spec names.
	rm := &netmap.NetworkMap{Self: relay, Peers: []netmap.Node{nm.Self, other}}
	if c := relayClientsFor(rm); len(c) != 2 {
		t.Fatalf("no policy: serves %d, want 2", len(c))
	}
	rm.PacketFilter = spec(map[string]any{"rules": []any{}, "relayClients": []uint64{3}})
	if c := relayClientsFor(rm); len(c) != 1 || c[0].Key != other.Key {
		t.Fatalf("spec names node 3: serves %+v", c)
	}
	rm.PacketFilter = json.RawMessage(`{"rules": 5}`)
	if c := relayClientsFor(rm); len(c) != 0 {
		t.Fatalf("unreadable filter: serves %+v", c)
	}
}
