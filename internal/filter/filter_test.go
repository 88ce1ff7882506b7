package filter

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"testing"
)

// pkt builds an IPv4 or IPv6 packet (no checksums: the filter reads none).
// For TCP/UDP a and b are ports; for ICMP a is the type and b the echo id.
func pkt(src, dst string, proto uint8, a, b uint16, flags uint8, quote []byte) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var l4 []byte
	switch proto {
	case ProtoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], a)
		binary.BigEndian.PutUint16(l4[2:], b)
		l4[12], l4[13] = 5<<4, flags
	case ProtoUDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], a)
		binary.BigEndian.PutUint16(l4[2:], b)
	default:
		l4 = make([]byte, 8)
		l4[0] = uint8(a)
		binary.BigEndian.PutUint16(l4[4:], b)
		l4 = append(l4, quote...)
	}
	if s.Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[8], h[9] = 64, proto
		copy(h[12:], s.AsSlice())
		copy(h[16:], d.AsSlice())
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6], h[7] = proto, 64
	copy(h[8:], s.AsSlice())
	copy(h[24:], d.AsSlice())
	return append(h, l4...)
}

const (
	me4, peer4, other4 = "100.64.0.1", "100.64.0.2", "100.64.0.3"
	me6, peer6, other6 = "fd00::1", "fd00::2", "fd00::3"
)

func spec(t *testing.T, js string) *Spec {
	t.Helper()
	s, err := ParseSpec([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTest(t *testing.T, js string) (*Filter, *int64) {
	f := New(0)
	var now int64 = 1
	f.now = func() int64 { return now }
	f.Set(spec(t, js))
	return f, &now
}

func TestRules(t *testing.T) {
	f, _ := newTest(t, `{"rules":[
		{"src":["100.64.0.2/32","fd00::2/128"],"protos":[6],"ports":["5432"]},
		{"src":["100.64.0.0/24"],"protos":[17],"ports":["53","1000-2000"]},
		{"src":["0.0.0.0/0","::/0"],"protos":[1,58]}]}`)
	cases := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"tcp v4 allowed port", pkt(peer4, me4, ProtoTCP, 40000, 5432, tcpSYN, nil), true},
		{"tcp v6 allowed port", pkt(peer6, me6, ProtoTCP, 40000, 5432, tcpSYN, nil), true},
		{"tcp v4 other port", pkt(peer4, me4, ProtoTCP, 40000, 22, tcpSYN, nil), false},
		{"tcp v6 other port", pkt(peer6, me6, ProtoTCP, 40000, 22, tcpSYN, nil), false},
		{"tcp other source", pkt(other4, me4, ProtoTCP, 40000, 5432, tcpSYN, nil), false},
		{"tcp v6 other source", pkt(other6, me6, ProtoTCP, 40000, 5432, tcpSYN, nil), false},
		{"tcp non-syn not special", pkt(other4, me4, ProtoTCP, 40000, 5432, tcpACK, nil), false},
		{"udp in range", pkt(other4, me4, ProtoUDP, 1, 1500, 0, nil), true},
		{"udp 53", pkt(other4, me4, ProtoUDP, 1, 53, 0, nil), true},
		{"udp out of range", pkt(other4, me4, ProtoUDP, 1, 2001, 0, nil), false},
		{"udp v6 not in v4 prefix", pkt(other6, me6, ProtoUDP, 1, 53, 0, nil), false},
		{"udp wrong proto for tcp rule", pkt(peer4, me4, ProtoUDP, 1, 5432, 0, nil), false},
		{"icmp echo", pkt(other4, me4, ProtoICMP, 8, 7, 0, nil), true},
		{"icmpv6 echo", pkt(other6, me6, ProtoICMPv6, 128, 7, 0, nil), true},
		{"unsolicited echo reply", pkt(other4, me4, ProtoICMP, 0, 7, 0, nil), false},
		{"other protocol", pkt(peer4, me4, 47, 0, 0, 0, nil), false},
		{"garbage", []byte{0x45, 0}, false},
	}
	for _, c := range cases {
		if got := f.Allow(c.pkt); got != c.want {
			t.Errorf("%s: Allow = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestEmptyDeniesAll(t *testing.T) {
	f, _ := newTest(t, `{"rules":[]}`)
	for _, p := range [][]byte{
		pkt(peer4, me4, ProtoTCP, 1, 22, tcpSYN, nil),
		pkt(peer6, me6, ProtoUDP, 1, 53, 0, nil),
		pkt(peer4, me4, ProtoICMP, 8, 1, 0, nil),
	} {
		if f.Allow(p) {
			t.Fatalf("empty filter allowed %x", p)
		}
	}
}

func TestReplies(t *testing.T) {
	for _, fam := range []struct{ me, peer, other string }{{me4, peer4, other4}, {me6, peer6, other6}} {
		f, now := newTest(t, `{"rules":[]}`)
		icmp := uint8(ProtoICMP)
		echoReq, echoRep := uint16(8), uint16(0)
		if netip.MustParseAddr(fam.me).Is6() {
			icmp, echoReq, echoRep = ProtoICMPv6, 128, 129
		}
		// TCP: a SYN out lets its own replies in, nothing else.
		f.Record(pkt(fam.me, fam.peer, ProtoTCP, 40000, 22, tcpSYN, nil))
		if !f.Allow(pkt(fam.peer, fam.me, ProtoTCP, 22, 40000, tcpSYN|tcpACK, nil)) {
			t.Fatal("tcp reply refused")
		}
		if f.Allow(pkt(fam.peer, fam.me, ProtoTCP, 22, 40001, tcpSYN|tcpACK, nil)) ||
			f.Allow(pkt(fam.other, fam.me, ProtoTCP, 22, 40000, tcpSYN|tcpACK, nil)) ||
			f.Allow(pkt(fam.peer, fam.me, ProtoTCP, 40000, 22, tcpSYN, nil)) {
			t.Fatal("tcp: something besides the reply passed")
		}
		// An outbound SYN-ACK or RST is not a new flow.
		f.Record(pkt(fam.me, fam.peer, ProtoTCP, 80, 50000, tcpSYN|tcpACK, nil))
		if f.Allow(pkt(fam.peer, fam.me, ProtoTCP, 50000, 80, tcpACK, nil)) {
			t.Fatal("outbound SYN-ACK opened a flow")
		}
		// UDP.
		f.Record(pkt(fam.me, fam.peer, ProtoUDP, 5353, 53, 0, nil))
		if !f.Allow(pkt(fam.peer, fam.me, ProtoUDP, 53, 5353, 0, nil)) {
			t.Fatal("udp reply refused")
		}
		if f.Allow(pkt(fam.peer, fam.me, ProtoUDP, 54, 5353, 0, nil)) {
			t.Fatal("udp from another port passed")
		}
		// ICMP echo: the reply with the same id passes, another id does not;
		// an echo reply going out opens nothing.
		f.Record(pkt(fam.me, fam.peer, icmp, echoReq, 99, 0, nil))
		if !f.Allow(pkt(fam.peer, fam.me, icmp, echoRep, 99, 0, nil)) {
			t.Fatal("echo reply refused")
		}
		if f.Allow(pkt(fam.peer, fam.me, icmp, echoRep, 98, 0, nil)) || f.Allow(pkt(fam.peer, fam.me, icmp, echoReq, 99, 0, nil)) {
			t.Fatal("echo: wrong id or a request passed")
		}
		// ICMP error quoting a recorded flow passes; quoting another does not.
		unreach := uint16(3)
		if icmp == ProtoICMPv6 {
			unreach = 1
		}
		quoted := pkt(fam.me, fam.peer, ProtoUDP, 5353, 53, 0, nil)
		if !f.Allow(pkt(fam.peer, fam.me, icmp, unreach, 0, 0, quoted)) {
			t.Fatal("unreachable for a recorded flow refused")
		}
		quoted = pkt(fam.me, fam.peer, ProtoUDP, 5354, 53, 0, nil)
		if f.Allow(pkt(fam.peer, fam.me, icmp, unreach, 0, 0, quoted)) {
			t.Fatal("unreachable for an unknown flow passed")
		}
		// Expiry: UDP idles out after UDPTimeout, but traffic refreshes it.
		*now += int64(UDPTimeout) - 1
		if !f.Allow(pkt(fam.peer, fam.me, ProtoUDP, 53, 5353, 0, nil)) {
			t.Fatal("udp flow expired early")
		}
		*now += int64(UDPTimeout) + 1
		if f.Allow(pkt(fam.peer, fam.me, ProtoUDP, 53, 5353, 0, nil)) {
			t.Fatal("udp flow did not expire")
		}
		if !f.Allow(pkt(fam.peer, fam.me, ProtoTCP, 22, 40000, tcpACK, nil)) {
			t.Fatal("tcp flow expired with udp's timeout")
		}
		*now += int64(TCPTimeout) + 1
		if f.Allow(pkt(fam.peer, fam.me, ProtoTCP, 22, 40000, tcpACK, nil)) {
			t.Fatal("tcp flow did not expire")
		}
	}
}

func TestTableBounded(t *testing.T) {
	f := New(nShards * 4)
	var now int64 = 1
	f.now = func() int64 { return now }
	for i := range 10000 {
		now++
		f.Record(pkt(me4, peer4, ProtoUDP, uint16(i), 53, 0, nil))
	}
	if n := f.Flows(); n > nShards*4 {
		t.Fatalf("table holds %d flows, bound %d", n, nShards*4)
	}
	// The newest flow survives eviction.
	if !f.Allow(pkt(peer4, me4, ProtoUDP, 53, 9999, 0, nil)) {
		t.Fatal("newest flow evicted")
	}
}

func TestRulesSurviveSetAndFlowsToo(t *testing.T) {
	f, _ := newTest(t, `{"rules":[{"src":["0.0.0.0/0"],"protos":[6]}]}`)
	f.Record(pkt(me4, peer4, ProtoUDP, 1, 2, 0, nil))
	if !f.Allow(pkt(other4, me4, ProtoTCP, 1, 22, tcpSYN, nil)) {
		t.Fatal("all-ports rule refused")
	}
	f.Set(nil)
	if f.Allow(pkt(other4, me4, ProtoTCP, 1, 22, tcpSYN, nil)) {
		t.Fatal("cleared rules still allow")
	}
	if !f.Allow(pkt(peer4, me4, ProtoUDP, 2, 1, 0, nil)) {
		t.Fatal("recorded flow lost on Set")
	}
}

func TestFragmentsAndExtensionHeaders(t *testing.T) {
	f, _ := newTest(t, `{"rules":[{"src":["::/0"],"protos":[6],"ports":["22"]}]}`)
	// IPv6 with a hop-by-hop header before TCP to port 22.
	p := pkt(peer6, me6, ProtoTCP, 1, 22, tcpSYN, nil)
	hbh := append([]byte{ProtoTCP, 0, 0, 0, 0, 0, 0, 0}, p[40:]...)
	p = append(p[:40:40], hbh...)
	p[6] = 0
	if !f.Allow(p) {
		t.Fatal("tcp behind hop-by-hop refused")
	}
	// Non-first IPv4 fragment passes.
	q := pkt(peer4, me4, ProtoTCP, 1, 23, tcpSYN, nil)
	binary.BigEndian.PutUint16(q[6:], 100)
	if !f.Allow(q) {
		t.Fatal("later fragment refused")
	}
}

func TestSpecJSON(t *testing.T) {
	s := &Spec{Rules: []Rule{{Src: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Protos: []int{6}, Ports: []PortRange{{22, 22}, {80, 443}}}}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"rules":[{"src":["10.0.0.0/8"],"protos":[6],"ports":["22","80-443"]}]}` {
		t.Fatalf("encoding %s", b)
	}
	if _, err := ParseSpec([]byte(`{"rules":[{"src":["x"]}]}`)); err == nil {
		t.Fatal("bad prefix accepted")
	}
	if _, err := ParsePortRange("9-3"); err == nil {
		t.Fatal("reversed range accepted")
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	f, _ := newTest(t, `{"rules":[{"src":["100.64.0.2/32","100.64.0.0/16"],"protos":[6],"ports":["5432"]}]}`)
	in := pkt(peer4, me4, ProtoTCP, 40000, 5432, tcpSYN, nil)
	reply := pkt(peer4, me4, ProtoUDP, 53, 1, 0, nil)
	out := pkt(me4, peer4, ProtoUDP, 1, 53, 0, nil)
	if n := testing.AllocsPerRun(1000, func() {
		f.Record(out)
		f.Allow(in)
		f.Allow(reply)
	}); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}

func BenchmarkAllowRule(b *testing.B) {
	f := New(0)
	f.Set(&Spec{Rules: []Rule{{Src: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}, Protos: []int{6}, Ports: []PortRange{{5432, 5432}}}}})
	p := pkt(peer4, me4, ProtoTCP, 40000, 5432, tcpACK, nil)
	b.ReportAllocs()
	for b.Loop() {
		if !f.Allow(p) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkAllowReply(b *testing.B) {
	f := New(0)
	f.Set(nil)
	f.Record(pkt(me4, peer4, ProtoUDP, 1, 53, 0, nil))
	p := pkt(peer4, me4, ProtoUDP, 53, 1, 0, nil)
	b.ReportAllocs()
	for b.Loop() {
		if !f.Allow(p) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	f := New(0)
	p := pkt(me4, peer4, ProtoUDP, 1, 53, 0, nil)
	b.ReportAllocs()
	for b.Loop() {
		f.Record(p)
	}
}
