package netmap

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func testNode(id uint64, name string, keyByte byte, addr string) Node {
	n := Node{ID: id, Name: name, User: "alice"}
	n.Key.PublicKey[0] = keyByte
	if addr != "" {
		p := netip.MustParsePrefix(addr)
		n.Addresses = []netip.Prefix{p}
		n.AllowedIPs = []netip.Prefix{p}
	}
	return n
}

func baseMap() *NetworkMap {
	return &NetworkMap{
		Version: 5,
		Self:    testNode(1, "self", 1, "100.64.0.1/32"),
		Peers: []Node{
			testNode(2, "a", 2, "100.64.0.2/32"),
			testNode(3, "b", 3, "100.64.0.3/32"),
		},
		Domain: "warren.internal",
	}
}

func TestDiffApplyTable(t *testing.T) {
	ep := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:41641")}
	tests := []struct {
		name  string
		edit  func(m *NetworkMap)
		check func(t *testing.T, d Delta)
	}{
		{"nothing", func(m *NetworkMap) {}, func(t *testing.T, d Delta) {
			if !d.IsEmpty() {
				t.Errorf("delta not empty: %+v", d)
			}
		}},
		{"peer added", func(m *NetworkMap) { m.Peers = append(m.Peers, testNode(4, "c", 4, "100.64.0.4/32")) },
			func(t *testing.T, d Delta) {
				if len(d.PeersAdded) != 1 || d.PeersAdded[0].ID != 4 || len(d.PeersChanged)+len(d.PeersRemoved) != 0 {
					t.Errorf("%+v", d)
				}
			}},
		{"peer removed", func(m *NetworkMap) { m.Peers = m.Peers[1:] }, func(t *testing.T, d Delta) {
			if len(d.PeersRemoved) != 1 || d.PeersRemoved[0] != 2 || len(d.PeersAdded) != 0 {
				t.Errorf("%+v", d)
			}
		}},
		{"endpoints changed", func(m *NetworkMap) { m.Peers[0].Endpoints = ep }, func(t *testing.T, d Delta) {
			if len(d.PeersChanged) != 1 {
				t.Fatalf("%+v", d)
			}
			c := d.PeersChanged[0]
			if c.ID != 2 || c.Endpoints == nil || c.Key != nil || c.Online != nil || c.Name != nil || c.Addresses != nil {
				t.Errorf("patch should carry only endpoints: %+v", c)
			}
		}},
		{"online and key changed", func(m *NetworkMap) { m.Peers[1].Online = true; m.Peers[1].Key.PublicKey[0] = 9 },
			func(t *testing.T, d Delta) {
				c := d.PeersChanged[0]
				if c.Online == nil || !*c.Online || c.Key == nil || c.Key.PublicKey[0] != 9 || c.Endpoints != nil {
					t.Errorf("%+v", c)
				}
			}},
		{"self changed", func(m *NetworkMap) { m.Self.Endpoints = ep }, func(t *testing.T, d Delta) {
			if d.Self == nil || len(d.PeersChanged) != 0 {
				t.Errorf("%+v", d)
			}
		}},
		{"dns, domain, filter", func(m *NetworkMap) {
			m.Domain = "corp.example"
			m.DNS.Nameservers = []netip.Addr{netip.MustParseAddr("100.100.100.100")}
			m.PacketFilter = json.RawMessage(`{"allow":"*"}`)
		}, func(t *testing.T, d Delta) {
			if d.Domain == nil || *d.Domain != "corp.example" || d.DNS == nil || string(d.PacketFilter) != `{"allow":"*"}` {
				t.Errorf("%+v", d)
			}
		}},
		{"last seen", func(m *NetworkMap) {
			m.Peers[0].LastSeen = time.Unix(1e9, 0).In(time.FixedZone("x", 7200))
		}, func(t *testing.T, d Delta) {
			if len(d.PeersChanged) != 1 || d.PeersChanged[0].LastSeen == nil || d.PeersChanged[0].Expiry != nil {
				t.Errorf("%+v", d)
			}
		}},
		{"same instant in another zone, nil vs empty lists", func(m *NetworkMap) {
			m.Self.Endpoints = []netip.AddrPort{}
			m.Peers[1].Expiry = time.Time{}.In(time.FixedZone("y", 0))
		}, func(t *testing.T, d Delta) {
			if !d.IsEmpty() {
				t.Errorf("%+v", d)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old := baseMap()
			neu := old.Clone()
			neu.Version = 6
			tc.edit(neu)
			if err := neu.Validate(); err != nil {
				t.Fatal(err)
			}
			d := Diff(old, neu)
			if d.From != 5 || d.To != 6 {
				t.Errorf("versions %d->%d", d.From, d.To)
			}
			tc.check(t, d)
			got, err := old.Apply(d)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(neu) {
				t.Errorf("Apply(Diff) = %+v, want %+v", got, neu)
			}
			if !old.Equal(baseMap()) {
				t.Error("Apply modified the old map")
			}
		})
	}
}

func TestFilterCleared(t *testing.T) {
	old := baseMap()
	old.PacketFilter = json.RawMessage(`{"a": 1}`)
	neu := baseMap()
	neu.Version = 6
	d := Diff(old, neu)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := DecodeDelta(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(d2.PacketFilter) != "null" {
		t.Fatalf("cleared filter encodes as %s (%q)", b, d2.PacketFilter)
	}
	got, err := old.Apply(*d2)
	if err != nil || got.PacketFilter != nil {
		t.Fatalf("got %v, %s", err, got.PacketFilter)
	}
}

func TestApplyRefuses(t *testing.T) {
	dupKey := testNode(4, "c", 2, "100.64.0.4/32") // key of peer 2
	dupAddr := testNode(4, "c", 4, "100.64.0.2/32")
	dupName := testNode(4, "a", 4, "100.64.0.4/32")
	selfKey := testNode(4, "c", 1, "")
	k2 := baseMap().Peers[1].Key
	tests := []struct {
		name string
		d    Delta
		want error
	}{
		{"version gap", Delta{From: 4, To: 6}, ErrVersionMismatch},
		{"version ahead", Delta{From: 6, To: 7}, ErrVersionMismatch},
		{"not advancing", Delta{From: 5, To: 5}, ErrInconsistent},
		{"going back", Delta{From: 5, To: 3}, ErrInconsistent},
		{"add existing", Delta{From: 5, To: 6, PeersAdded: []Node{testNode(2, "z", 9, "")}}, ErrInconsistent},
		{"add self id", Delta{From: 5, To: 6, PeersAdded: []Node{testNode(1, "z", 9, "")}}, ErrInconsistent},
		{"add twice", Delta{From: 5, To: 6, PeersAdded: []Node{testNode(7, "z", 9, ""), testNode(7, "y", 8, "")}}, ErrInconsistent},
		{"remove unknown", Delta{From: 5, To: 6, PeersRemoved: []uint64{9}}, ErrInconsistent},
		{"remove twice", Delta{From: 5, To: 6, PeersRemoved: []uint64{2, 2}}, ErrInconsistent},
		{"change unknown", Delta{From: 5, To: 6, PeersChanged: []PeerChange{{ID: 9, Online: ptr(true)}}}, ErrInconsistent},
		{"change removed", Delta{From: 5, To: 6, PeersRemoved: []uint64{2}, PeersChanged: []PeerChange{{ID: 2, Online: ptr(true)}}}, ErrInconsistent},
		{"duplicate key", Delta{From: 5, To: 6, PeersAdded: []Node{dupKey}}, ErrInconsistent},
		{"duplicate key with self", Delta{From: 5, To: 6, PeersAdded: []Node{selfKey}}, ErrInconsistent},
		{"duplicate address", Delta{From: 5, To: 6, PeersAdded: []Node{dupAddr}}, ErrInconsistent},
		{"duplicate name", Delta{From: 5, To: 6, PeersAdded: []Node{dupName}}, ErrInconsistent},
		{"change to duplicate key", Delta{From: 5, To: 6, PeersChanged: []PeerChange{{ID: 2, Key: &k2}}}, ErrInconsistent},
		{"change to bad name", Delta{From: 5, To: 6, PeersChanged: []PeerChange{{ID: 2, Name: ptr("Bad_Name")}}}, ErrInconsistent},
		{"bad filter", Delta{From: 5, To: 6, PacketFilter: json.RawMessage(`{`)}, ErrInconsistent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := baseMap()
			got, err := m.Apply(tc.d)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Apply = %v, %v; want %v", got, err, tc.want)
			}
			if !m.Equal(baseMap()) {
				t.Error("failed Apply modified the map")
			}
		})
	}
	// Swapping keys between two peers in one delta is consistent.
	m := baseMap()
	k3 := m.Peers[0].Key
	_, err := m.Apply(Delta{From: 5, To: 6, PeersChanged: []PeerChange{{ID: 2, Key: &k2}, {ID: 3, Key: &k3}}})
	if err != nil {
		t.Errorf("key swap refused: %v", err)
	}
}

// TestLostDeltaForcesResync: after a dropped delta every later one is
// refused until a full map arrives.
func TestLostDeltaForcesResync(t *testing.T) {
	g := newGen(7)
	m0 := g.netmap(1)
	m1 := g.evolve(m0)
	m2 := g.evolve(m1)
	if _, err := m0.Apply(Diff(m1, m2)); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("delta after a gap: %v", err)
	}
	got, err := m0.Apply(Diff(m0, m1))
	if err != nil {
		t.Fatal(err)
	}
	if got, err = got.Apply(Diff(m1, m2)); err != nil || !got.Equal(m2) {
		t.Fatalf("in-order deltas: %v", err)
	}
}

// TestDiffApplyProperty: Apply(old, Diff(old, new)) == new for thousands of
// random related and unrelated map pairs, directly and through JSON, and
// old is never modified.
func TestDiffApplyProperty(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	g := newGen(1)
	for i := range n {
		old := g.netmap(uint64(g.r.IntN(100)))
		var neu *NetworkMap
		if i%5 == 0 {
			neu = g.netmap(old.Version + 1) // unrelated map
		} else {
			neu = g.evolve(old)
			for range g.r.IntN(3) {
				neu = g.evolve(neu)
			}
		}
		for _, m := range []*NetworkMap{old, neu} {
			if err := m.Validate(); err != nil {
				t.Fatalf("pair %d: generator made an invalid map: %v", i, err)
			}
		}
		before := old.Clone()
		d := Diff(old, neu)
		got, err := old.Apply(d)
		if err != nil {
			t.Fatalf("pair %d: Apply: %v", i, err)
		}
		if !got.Equal(neu) {
			t.Fatalf("pair %d: Apply(Diff) differs\n got %+v\nwant %+v", i, got, neu)
		}
		if !old.Equal(before) {
			t.Fatalf("pair %d: Apply modified old", i)
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := DecodeDelta(b)
		if err != nil {
			t.Fatalf("pair %d: DecodeDelta(%s): %v", i, b, err)
		}
		got2, err := old.Apply(*d2)
		if err != nil || !got2.Equal(neu) {
			t.Fatalf("pair %d: Apply of decoded delta: %v", i, err)
		}
		if e := Diff(neu, neu); !e.IsEmpty() {
			t.Fatalf("pair %d: Diff(m, m) not empty: %+v", i, e)
		}
	}
}
