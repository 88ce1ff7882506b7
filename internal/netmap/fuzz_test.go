package netmap

import (
	"bytes"
	"encoding/json"
	"testing"
)

func seedCorpus(f *testing.F, delta bool) {
	g := newGen(11)
	for range 8 {
		a := g.netmap(uint64(g.r.IntN(10)))
		b := g.evolve(a)
		var v any = b
		if delta {
			v = Diff(a, b)
		}
		enc, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"from":1,"to":2,"packetFilter":null,"peersChanged":[{"id":2,"endpoints":null}]}`))
	f.Add([]byte(`{"protocolVersion":1,"self":{"id":1,"name":"a","key":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","lastSeen":"2020-01-01T00:00:00+01:00"},"packetFilter":{"a" : "<&>"}}`))
}

// FuzzDecodeNetworkMap: decoding never panics, and whatever decodes
// re-encodes to a fixed point that decodes to an equal map.
func FuzzDecodeNetworkMap(f *testing.F) {
	seedCorpus(f, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeNetworkMap(b)
		if err != nil {
			return
		}
		e1, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("valid map does not encode: %v", err)
		}
		m2, err := DecodeNetworkMap(e1)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", e1, err)
		}
		if !m2.Equal(m) {
			t.Fatalf("round trip changed the map:\n%+v\n%+v", m, m2)
		}
		e2, _ := json.Marshal(m2)
		if !bytes.Equal(e1, e2) {
			t.Fatalf("encoding not stable:\n%s\n%s", e1, e2)
		}
		if d := Diff(m, m2); !d.IsEmpty() {
			t.Fatalf("Diff of equal maps: %+v", d)
		}
	})
}

// FuzzDecodeDelta: decoding never panics, decoded deltas re-encode to a
// fixed point, and applying one to a map never panics and never yields an
// invalid map.
func FuzzDecodeDelta(f *testing.F) {
	seedCorpus(f, true)
	base := newGen(11).netmap(0)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDelta(b)
		if err != nil {
			return
		}
		e1, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("decoded delta does not encode: %v", err)
		}
		d2, err := DecodeDelta(e1)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", e1, err)
		}
		e2, _ := json.Marshal(d2)
		if !bytes.Equal(e1, e2) {
			t.Fatalf("encoding not stable:\n%s\n%s", e1, e2)
		}
		m := base.Clone()
		m.Version = d.From
		before := m.Clone()
		out, err := m.Apply(*d)
		if !m.Equal(before) {
			t.Fatal("Apply modified its receiver")
		}
		if err == nil {
			if verr := out.Validate(); verr != nil {
				t.Fatalf("Apply produced an invalid map: %v", verr)
			}
			out2, err := m.Apply(*d2)
			if err != nil || !out2.Equal(out) {
				t.Fatalf("re-decoded delta applies differently: %v", err)
			}
		}
	})
}
