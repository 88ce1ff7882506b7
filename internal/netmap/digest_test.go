package netmap

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// TestResumeDeltaProperty: for random pairs of a held map and a current
// one (related or not), the resume delta built from the held map's digest
// turns it into the current one; peers the two agree on are not sent.
func TestResumeDeltaProperty(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	g := newGen(7)
	hash := func(p *Node) (uint64, error) {
		b, err := json.Marshal(p)
		return HashNodeJSON(b), err
	}
	for i := range n {
		held := g.netmap(uint64(1 + g.r.IntN(100)))
		cur := g.evolve(held)
		if i%5 == 0 {
			cur = g.netmap(held.Version + 7) // unrelated
		}
		digest, err := held.PeerDigest()
		if err != nil {
			t.Fatal(err)
		}
		have, err := ParseDigest(digest)
		if err != nil || len(have) != len(held.Peers) {
			t.Fatalf("pair %d: digest of %d peers parsed to %d: %v", i, len(held.Peers), len(have), err)
		}
		want := cur.Clone()
		want.Version = held.Version + 1
		cur.Version = want.Version
		d, err := ResumeDelta(have, held.Version, cur, hash)
		if err != nil {
			t.Fatal(err)
		}
		got, err := held.Apply(d)
		if err != nil {
			t.Fatalf("pair %d: Apply: %v", i, err)
		}
		if !got.Equal(want) {
			t.Fatalf("pair %d: resumed map differs\n got %+v\nwant %+v", i, got, want)
		}
		same := 0
		for _, p := range cur.Peers {
			if h, ok := held.Peer(p.ID); ok && h.Equal(&p) {
				same++
			}
		}
		if sent := len(d.PeersAdded) + len(d.PeersChanged); sent != len(cur.Peers)-same {
			t.Fatalf("pair %d: %d peers sent, want %d (those that differ)", i, sent, len(cur.Peers)-same)
		}
	}
}

// TestParseDigestRefuses: a digest that is not whole entries in
// increasing ID order is refused.
func TestParseDigestRefuses(t *testing.T) {
	entry := func(id byte) []byte { return []byte{0, 0, 0, 0, 0, 0, 0, id, 1, 2, 3, 4, 5, 6, 7, 8} }
	for name, d := range map[string][]byte{
		"partial entry": entry(1)[:15],
		"zero ID":       entry(0),
		"decreasing":    append(entry(2), entry(1)...),
		"duplicate":     append(entry(2), entry(2)...),
	} {
		if _, err := ParseDigest(d); !errors.Is(err, ErrBadDigest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if m, err := ParseDigest(append(entry(1), entry(2)...)); err != nil || len(m) != 2 {
		t.Errorf("good digest: %v %v", m, err)
	}
}

// TestFullChangeSetsEveryField: a resumed peer is sent whole, so
// FullChange must set every field a PeerChange can carry (a field added
// to Node and PeerChange but not here was silently kept stale on
// resume: Via, when WireGuard-only members came).
func TestFullChangeSetsEveryField(t *testing.T) {
	c := reflect.ValueOf(FullChange(&Node{ID: 7}))
	for i := 0; i < c.NumField(); i++ {
		if f := c.Field(i); f.Kind() == reflect.Pointer && f.IsNil() {
			t.Errorf("FullChange leaves PeerChange.%s unset", c.Type().Field(i).Name)
		}
	}
}
