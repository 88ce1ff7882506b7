package filter

import "testing"

// A router's filter: the peer may reach the router on 22 only, and the
// LAN behind it (198.19.1.0/24) on every port, but not another subnet.
func TestRuleDst(t *testing.T) {
	f := New(0)
	f.Set(spec(t, `{"rules": [
		{"src": ["100.64.0.2/32"], "protos": [6], "ports": ["22"], "dst": ["100.64.0.1/32"]},
		{"src": ["100.64.0.2/32"], "protos": [6, 1], "dst": ["198.19.1.0/24"]}
	]}`))
	for _, c := range []struct {
		dst  string
		port uint16
		want bool
	}{
		{me4, 22, true},
		{me4, 80, false},
		{"198.19.1.7", 80, true},
		{"198.19.1.7", 22, true},
		{"198.19.2.7", 80, false},
	} {
		if got := f.Allow(pkt(peer4, c.dst, ProtoTCP, 40000, c.port, 0x02, nil)); got != c.want {
			t.Errorf("tcp %s → %s:%d: allowed %v, want %v", peer4, c.dst, c.port, got, c.want)
		}
	}
	if !f.Allow(pkt(peer4, "198.19.1.7", ProtoICMP, 8, 1, 0, nil)) || f.Allow(pkt(peer4, me4, ProtoICMP, 8, 1, 0, nil)) {
		t.Error("icmp echo: want allowed to the LAN only")
	}
	// Without Dst a rule applies to any destination (a node that does not
	// forward only receives its own packets).
	f.Set(spec(t, `{"rules": [{"src": ["100.64.0.2/32"], "protos": [6], "ports": ["22"]}]}`))
	if !f.Allow(pkt(peer4, "198.19.1.7", ProtoTCP, 40000, 22, 0x02, nil)) {
		t.Error("rule without dst did not match")
	}
	if _, err := ParseSpec([]byte(`{"rules": [{"src": ["100.64.0.2/32"], "protos": [6], "dst": ["bad"]}]}`)); err == nil {
		t.Error("bad dst accepted")
	}
}

func TestAllowWithDstDoesNotAllocate(t *testing.T) {
	f := New(0)
	f.Set(spec(t, `{"rules": [{"src": ["100.64.0.2/32"], "protos": [6], "dst": ["198.19.1.0/24"]}]}`))
	p := pkt(peer4, "198.19.1.7", ProtoTCP, 40000, 80, 0x02, nil)
	if n := testing.AllocsPerRun(100, func() { f.Allow(p) }); n != 0 {
		t.Fatalf("%v allocs per Allow", n)
	}
}
