package netmap

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// The golden files under testdata were encoded by the netmap package while
// its key fields were still plain noise.PublicKey. The node and disco keys
// are typed now (pubkey.Node, pubkey.Disco); the wire form must not have
// moved: an old encoding decodes to the same keys and re-encodes to the
// same bytes.

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

const (
	goldenSelfKey   = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
	goldenPeerKey   = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
	goldenPeerDisco = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="
	goldenRelayKey  = "YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8="
)

func TestWireCompatNetworkMap(t *testing.T) {
	old := readGolden(t, "map-v1.json")
	m, err := DecodeNetworkMap(old)
	if err != nil {
		t.Fatal(err)
	}
	if m.Self.Key.String() != goldenSelfKey || !m.Self.DiscoKey.IsZero() {
		t.Errorf("self keys %s / %s", m.Self.Key, m.Self.DiscoKey)
	}
	if len(m.Peers) != 1 || m.Peers[0].Key.String() != goldenPeerKey || m.Peers[0].DiscoKey.String() != goldenPeerDisco {
		t.Fatalf("peers %+v", m.Peers)
	}
	if len(m.Relays) != 1 || m.Relays[0].Key.String() != goldenRelayKey {
		t.Fatalf("relays %+v", m.Relays)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, old) {
		t.Fatalf("re-encoding differs from the old encoding:\nold %s\nnew %s", old, b)
	}
}

func TestWireCompatDelta(t *testing.T) {
	old := readGolden(t, "delta-v1.json")
	d, err := DecodeDelta(old)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.PeersChanged) != 2 {
		t.Fatalf("changes %+v", d.PeersChanged)
	}
	c := d.PeersChanged[0]
	if c.Key == nil || c.Key.String() != goldenPeerKey || c.DiscoKey == nil || c.DiscoKey.String() != goldenPeerDisco {
		t.Errorf("change 0 keys %v / %v", c.Key, c.DiscoKey)
	}
	if c := d.PeersChanged[1]; c.Key != nil || c.DiscoKey != nil {
		t.Errorf("change 1 has keys %v / %v", c.Key, c.DiscoKey)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, old) {
		t.Fatalf("re-encoding differs from the old encoding:\nold %s\nnew %s", old, b)
	}
}
