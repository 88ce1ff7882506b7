package filter

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

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

// routerDsts is a router's destinations: its own addresses and one
// approved subnet.
var routerDsts = Destinations{
	Local:  []netip.Addr{netip.MustParseAddr(me4), netip.MustParseAddr(me6)},
	Routes: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")},
}

// A router forwards only into its approved routes, whatever the rules
// say: without a policy, with a rule without Dst ("*"), and with a rule
// whose Dst lies outside the routes. Its own addresses stay reachable
// per the rules.
func TestDestinationsRouter(t *testing.T) {
	policies := map[string]func(f *Filter){
		"no policy": func(f *Filter) { f.SetNoPolicy() },
		"rule without dst": func(f *Filter) {
			f.Set(spec(t, `{"rules": [{"src": ["0.0.0.0/0", "::/0"], "protos": [1, 6, 17, 58]}]}`))
		},
		"rule with dst outside the routes": func(f *Filter) {
			f.Set(spec(t, `{"rules": [{"src": ["0.0.0.0/0", "::/0"], "protos": [1, 6, 17, 58],
				"dst": ["0.0.0.0/0", "::/0", "169.254.169.254/32", "198.19.2.0/24", "100.64.0.1/32", "fd00::1/128"]}]}`))
		},
	}
	for name, set := range policies {
		f := New(0)
		set(f)
		f.SetDestinations(routerDsts)
		for _, c := range []struct {
			dst  string
			want Verdict
		}{
			{me4, Accept},
			{me6, Accept},
			{"198.19.1.7", Accept},
			{"169.254.169.254", DropDestination}, // a metadata service beside the router
			{"198.19.2.7", DropDestination},      // another subnet, not approved
			{"198.19.20.1", DropDestination},     // the internet: not an exit node
			{"2001:db8::1", DropDestination},
			{"fe80::1", DropDestination},
			{other4, DropDestination}, // another peer: no hairpin through the router
		} {
			for _, proto := range []uint8{ProtoTCP, ProtoUDP, ProtoICMP} {
				src, a := peer4, uint16(40000)
				if netip.MustParseAddr(c.dst).Is6() {
					src = peer6
				}
				if proto == ProtoICMP {
					a = 8
					if src == peer6 {
						proto = ProtoICMPv6
						a = 128
					}
				}
				if got := f.Check(pkt(src, c.dst, proto, a, 80, tcpSYN, nil)); got != c.want {
					t.Errorf("%s: proto %d %s → %s: %v, want %v", name, proto, src, c.dst, got, c.want)
				}
			}
		}
		// A later fragment, which carries no ports, is checked too.
		q := pkt(peer4, "198.19.2.7", ProtoTCP, 1, 80, tcpSYN, nil)
		binary.BigEndian.PutUint16(q[6:], 100)
		if got := f.Check(q); got != DropDestination {
			t.Errorf("%s: fragment to an unapproved subnet: %v", name, got)
		}
	}
}

// An approved exit node forwards anywhere but to link-local addresses,
// unless a route names them.
func TestDestinationsExitNode(t *testing.T) {
	f := New(0)
	f.SetNoPolicy()
	d := Destinations{Local: routerDsts.Local, Routes: []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	f.SetDestinations(d)
	for dst, want := range map[string]Verdict{
		"198.19.20.1": Accept, "2001:db8::1": Accept, "198.19.1.7": Accept, me4: Accept,
		"169.254.169.254": DropDestination, "fe80::1": DropDestination,
	} {
		src := peer4
		if netip.MustParseAddr(dst).Is6() {
			src = peer6
		}
		if got := f.Check(pkt(src, dst, ProtoUDP, 40000, 53, 0, nil)); got != want {
			t.Errorf("exit node: → %s: %v, want %v", dst, got, want)
		}
	}
	d.Routes = append(d.Routes, netip.MustParsePrefix("169.254.169.254/32"))
	f.SetDestinations(d)
	if got := f.Check(pkt(peer4, "169.254.169.254", ProtoTCP, 40000, 80, tcpSYN, nil)); got != Accept {
		t.Errorf("an explicit route to the metadata address: %v", got)
	}
	// Without any route the node is no router: only its own addresses.
	f.SetDestinations(Destinations{Local: routerDsts.Local})
	if f.Check(pkt(peer4, "198.19.20.1", ProtoUDP, 1, 53, 0, nil)) != DropDestination || f.Check(pkt(peer4, me4, ProtoUDP, 1, 53, 0, nil)) != Accept {
		t.Error("node without routes: want only its own addresses")
	}
}

// Without a policy nothing is recorded (every reply passes anyway).
func TestNoPolicyRecordsNothing(t *testing.T) {
	f := New(0)
	f.SetNoPolicy()
	f.Record(pkt(me4, peer4, ProtoTCP, 40000, 22, tcpSYN, nil))
	if f.Flows() != 0 {
		t.Fatalf("%d flows recorded without a policy", f.Flows())
	}
	if f.Check(pkt(peer4, me4, ProtoTCP, 22, 40000, tcpSYN, nil)) != Accept {
		t.Fatal("no policy and no destinations set: refused")
	}
}

func TestCheckDestinationsDoesNotAllocate(t *testing.T) {
	f := New(0)
	f.SetDestinations(routerDsts)
	pass := pkt(peer4, "198.19.1.7", ProtoTCP, 40000, 80, tcpSYN, nil)
	drop := pkt(peer4, "169.254.169.254", ProtoTCP, 40000, 80, tcpSYN, nil)
	pass6 := pkt(peer6, me6, ProtoUDP, 40000, 53, 0, nil)
	check := func(name string) {
		if n := testing.AllocsPerRun(100, func() { f.Check(pass); f.Check(drop); f.Check(pass6) }); n != 0 {
			t.Fatalf("%s: %v allocs per Check", name, n)
		}
	}
	f.SetNoPolicy()
	check("no policy")
	f.Set(spec(t, `{"rules": [{"src": ["0.0.0.0/0", "::/0"], "protos": [6, 17]}]}`))
	check("rules")
}
