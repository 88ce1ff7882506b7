package allowedips

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

type peer struct{ name string }

var (
	pa = &peer{"a"}
	pb = &peer{"b"}
	pc = &peer{"c"}
	pd = &peer{"d"}
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// check verifies the trie's structural invariants and its prefix count.
func check[T comparable](t *testing.T, tb *Table[T]) {
	t.Helper()
	count := 0
	var walk func(n *node[T], parent *node[T], side uint8, max uint8)
	walk = func(n *node[T], parent *node[T], side uint8, max uint8) {
		if n == nil {
			return
		}
		mhi, mlo := mask(n.bits)
		if n.mhi != mhi || n.mlo != mlo || n.hi&^mhi != 0 || n.lo&^mlo != 0 {
			t.Fatalf("node /%d: bad mask or unmasked key", n.bits)
		}
		if n.bits > max {
			t.Fatalf("node /%d longer than the family's %d bits", n.bits, max)
		}
		if parent != nil {
			if n.bits <= parent.bits {
				t.Fatalf("child /%d not longer than parent /%d", n.bits, parent.bits)
			}
			if (n.hi^parent.hi)&parent.mhi|(n.lo^parent.lo)&parent.mlo != 0 {
				t.Fatalf("child does not extend its parent")
			}
			if bitAt(n.hi, n.lo, parent.bits) != side {
				t.Fatalf("child on the wrong side")
			}
		}
		if n.set {
			count++
		} else if n.child[0] == nil || n.child[1] == nil {
			t.Fatalf("valueless node /%d with fewer than two children", n.bits)
		}
		walk(n.child[0], n, 0, max)
		walk(n.child[1], n, 1, max)
	}
	walk(tb.v4, nil, 0, 32)
	walk(tb.v6, nil, 0, 128)
	if count != tb.Len() {
		t.Fatalf("Len = %d, trie holds %d", tb.Len(), count)
	}
}

type lookupCase struct {
	addr string
	want *peer // nil: no match
}

func expectLookups(t *testing.T, tb *Table[*peer], cases []lookupCase) {
	t.Helper()
	for _, c := range cases {
		a := addr(c.addr)
		got, ok := tb.Lookup(a)
		if ok != (c.want != nil) || got != c.want {
			t.Errorf("Lookup(%s) = %v, %v; want %v", c.addr, got, ok, c.want)
		}
		// The byte-level variants must agree.
		var bgot *peer
		var bok bool
		if a.Is4() {
			bgot, bok = tb.LookupIPv4(a.As4())
			b4 := a.As4()
			if g, o := tb.LookupBytes(b4[:]); g != bgot || o != bok {
				t.Errorf("LookupBytes(%s) disagrees", c.addr)
			}
		} else {
			bgot, bok = tb.LookupIPv6(a.As16())
			b16 := a.As16()
			if g, o := tb.LookupBytes(b16[:]); g != bgot || o != bok {
				t.Errorf("LookupBytes(%s) disagrees", c.addr)
			}
		}
		if bgot != got || bok != ok {
			t.Errorf("byte lookup of %s = %v, %v; Lookup gave %v, %v", c.addr, bgot, bok, got, ok)
		}
	}
}

func TestEmpty(t *testing.T) {
	var tb Table[*peer]
	expectLookups(t, &tb, []lookupCase{{"0.0.0.0", nil}, {"1.2.3.4", nil}, {"::", nil}, {"2001:db8::1", nil}})
	if tb.Len() != 0 || len(tb.Prefixes(pa)) != 0 {
		t.Fatal("empty table not empty")
	}
	if tb.Remove(pfx("10.0.0.0/8"), pa) {
		t.Fatal("Remove from empty table succeeded")
	}
	tb.RemoveValue(pa)
	check(t, &tb)
}

func TestDefaultRoutes(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(pfx("0.0.0.0/0"), pa)
	expectLookups(t, &tb, []lookupCase{
		{"0.0.0.0", pa}, {"255.255.255.255", pa}, {"10.1.2.3", pa},
		{"::", nil}, {"2001:db8::1", nil},
		{"::ffff:10.1.2.3", nil}, // mapped addresses are IPv6
	})
	tb.Insert(pfx("::/0"), pb)
	expectLookups(t, &tb, []lookupCase{
		{"10.1.2.3", pa}, {"::", pb}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", pb},
		{"::ffff:10.1.2.3", pb},
	})
	if tb.Len() != 2 {
		t.Fatalf("Len = %d, want 2", tb.Len())
	}
	check(t, &tb)
}

func TestHostRoutes(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(pfx("0.0.0.0/0"), pa)
	tb.Insert(pfx("192.0.2.1/32"), pc)
	tb.Insert(pfx("2001:db8::1/128"), pc)
	tb.Insert(pfx("2001:db8::/32"), pb)
	expectLookups(t, &tb, []lookupCase{
		{"192.0.2.1", pc}, {"192.0.2.0", pa}, {"192.0.2.2", pa}, {"192.0.2.129", pa},
		{"2001:db8::1", pc}, {"2001:db8::", pb}, {"2001:db8::2", pb},
		{"2001:db8:ffff::1", pb}, {"2001:db9::1", nil},
		{"fe80::1%eth0", nil}, {"2001:db8::1%eth0", pc}, // zones are ignored
	})
	check(t, &tb)
}

func TestOverlapping(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(pfx("10.0.0.0/8"), pa)
	tb.Insert(pfx("10.1.0.0/16"), pb)
	tb.Insert(pfx("10.1.2.0/24"), pc)
	tb.Insert(pfx("10.1.2.128/25"), pa)
	tb.Insert(pfx("10.1.2.200/30"), pd)
	tb.Insert(pfx("10.128.0.0/9"), pd)
	cases := []lookupCase{
		{"10.0.0.1", pa}, {"10.255.0.1", pd}, {"10.127.255.255", pa}, {"10.128.0.0", pd},
		{"10.1.0.1", pb}, {"10.1.3.1", pb},
		{"10.1.2.1", pc}, {"10.1.2.127", pc},
		{"10.1.2.128", pa}, {"10.1.2.199", pa}, {"10.1.2.200", pd}, {"10.1.2.203", pd},
		{"10.1.2.204", pa}, {"10.1.2.255", pa},
		{"11.0.0.0", nil}, {"9.255.255.255", nil},
	}
	expectLookups(t, &tb, cases)
	check(t, &tb)

	// The same table built in the opposite order answers identically.
	var rev Table[*peer]
	rev.Insert(pfx("10.128.0.0/9"), pd)
	rev.Insert(pfx("10.1.2.200/30"), pd)
	rev.Insert(pfx("10.1.2.128/25"), pa)
	rev.Insert(pfx("10.1.2.0/24"), pc)
	rev.Insert(pfx("10.1.0.0/16"), pb)
	rev.Insert(pfx("10.0.0.0/8"), pa)
	expectLookups(t, &rev, cases)
	check(t, &rev)

	// IPv6 siblings that diverge deep in the low 64 bits.
	var t6 Table[*peer]
	t6.Insert(pfx("2001:db8::aaaa:0/112"), pa)
	t6.Insert(pfx("2001:db8::aaab:0/112"), pb)
	t6.Insert(pfx("2001:db8::/64"), pc)
	expectLookups(t, &t6, []lookupCase{
		{"2001:db8::aaaa:1", pa}, {"2001:db8::aaab:ffff", pb}, {"2001:db8::aaac:0", pc}, {"2001:db8:0:1::", nil},
	})
	check(t, &t6)
}

func TestMaskingAndReplace(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(pfx("10.1.2.3/16"), pa) // host bits are dropped
	if got := tb.Prefixes(pa); !slices.Equal(got, []netip.Prefix{pfx("10.1.0.0/16")}) {
		t.Fatalf("Prefixes = %v, want [10.1.0.0/16]", got)
	}
	tb.Insert(pfx("10.1.0.0/16"), pb) // same prefix: new owner
	if tb.Len() != 1 {
		t.Fatalf("Len = %d after replacing, want 1", tb.Len())
	}
	expectLookups(t, &tb, []lookupCase{{"10.1.9.9", pb}})
	if got := tb.Prefixes(pa); len(got) != 0 {
		t.Fatalf("old owner still has %v", got)
	}
	if tb.Remove(pfx("10.1.0.0/16"), pa) {
		t.Fatal("old owner removed a prefix it no longer owns")
	}
	if !tb.Remove(pfx("10.1.255.255/16"), pb) { // masked too
		t.Fatal("owner could not remove its prefix given with host bits")
	}
	if tb.Len() != 0 {
		t.Fatalf("Len = %d, want 0", tb.Len())
	}
	check(t, &tb)
}

func TestMappedPrefixes(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(pfx("10.0.0.0/8"), pa)
	tb.Insert(pfx("::ffff:10.0.0.0/104"), pb)
	expectLookups(t, &tb, []lookupCase{
		{"10.0.0.1", pa}, {"::ffff:10.0.0.1", pb}, {"::ffff:11.0.0.1", nil}, {"11.0.0.1", nil},
	})
	if got := tb.Prefixes(pb); !slices.Equal(got, []netip.Prefix{pfx("::ffff:10.0.0.0/104")}) {
		t.Fatalf("Prefixes = %v", got)
	}
	check(t, &tb)
}

func TestRemove(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(pfx("10.0.0.0/8"), pa)
	tb.Insert(pfx("10.1.0.0/16"), pb)
	tb.Insert(pfx("10.2.0.0/16"), pc)
	tb.Insert(pfx("fd00::/8"), pa)
	steps := []struct {
		p    string
		v    *peer
		want bool
	}{
		{"10.1.0.0/16", pa, false}, // wrong owner
		{"10.3.0.0/16", pc, false}, // not present
		{"10.0.0.0/14", pa, false}, // the valueless fork joining 10.1/16 and 10.2/16
		{"10.0.0.0/7", pa, false},
		{"10.1.0.0/16", pb, true},
		{"10.1.0.0/16", pb, false}, // already gone
		{"10.0.0.0/8", pa, true},   // removing a parent keeps its child
		{"fd00::/8", pb, false},
		{"fd00::/8", pa, true},
	}
	if f := tb.v4.child[0]; f == nil || f.set || f.bits != 14 {
		t.Fatalf("expected a valueless /14 fork under 10.0.0.0/8")
	}
	for _, s := range steps {
		if got := tb.Remove(pfx(s.p), s.v); got != s.want {
			t.Fatalf("Remove(%s, %s) = %v, want %v", s.p, s.v.name, got, s.want)
		}
		check(t, &tb)
	}
	expectLookups(t, &tb, []lookupCase{{"10.1.0.1", nil}, {"10.0.0.1", nil}, {"10.2.0.1", pc}, {"fd00::1", nil}})
	if tb.Len() != 1 {
		t.Fatalf("Len = %d, want 1", tb.Len())
	}
	if tb.Remove(netip.Prefix{}, pa) {
		t.Fatal("Remove of the invalid prefix succeeded")
	}
}

func TestRemoveValue(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(pfx("0.0.0.0/0"), pa)
	tb.Insert(pfx("10.0.0.0/8"), pb)
	tb.Insert(pfx("10.1.0.0/16"), pa)
	tb.Insert(pfx("10.1.1.0/24"), pb)
	tb.Insert(pfx("10.1.1.1/32"), pa)
	tb.Insert(pfx("::/0"), pc)
	tb.Insert(pfx("2001:db8::/32"), pa)
	tb.Insert(pfx("2001:db8::/48"), pb)
	tb.RemoveValue(pa)
	check(t, &tb)
	if tb.Len() != 4 {
		t.Fatalf("Len = %d, want 4", tb.Len())
	}
	if got := tb.Prefixes(pa); len(got) != 0 {
		t.Fatalf("a still owns %v", got)
	}
	want := []netip.Prefix{pfx("10.0.0.0/8"), pfx("10.1.1.0/24"), pfx("2001:db8::/48")}
	if got := tb.Prefixes(pb); !slices.Equal(got, want) {
		t.Fatalf("Prefixes(b) = %v, want %v", got, want)
	}
	expectLookups(t, &tb, []lookupCase{
		{"1.1.1.1", nil}, {"10.2.0.1", pb}, {"10.1.2.1", pb}, {"10.1.1.1", pb},
		{"2001:db8::1", pb}, {"2001:db8:1::1", pc}, {"fe80::1", pc},
	})
	tb.RemoveValue(pb)
	tb.RemoveValue(pc)
	if tb.Len() != 0 || tb.v4 != nil || tb.v6 != nil {
		t.Fatalf("table not empty after removing every owner: Len %d", tb.Len())
	}
}

func TestPrefixesSorted(t *testing.T) {
	var tb Table[*peer]
	in := []string{"2001:db8::/32", "10.1.0.0/16", "::/0", "10.0.0.0/8", "192.168.0.0/16", "10.0.0.0/16", "0.0.0.0/0", "::ffff:0.0.0.0/96"}
	for _, s := range in {
		tb.Insert(pfx(s), pa)
	}
	tb.Insert(pfx("172.16.0.0/12"), pb)
	want := []netip.Prefix{
		pfx("0.0.0.0/0"), pfx("10.0.0.0/8"), pfx("10.0.0.0/16"), pfx("10.1.0.0/16"), pfx("192.168.0.0/16"),
		pfx("::/0"), pfx("::ffff:0.0.0.0/96"), pfx("2001:db8::/32"),
	}
	if got := tb.Prefixes(pa); !slices.Equal(got, want) {
		t.Fatalf("Prefixes = %v\nwant %v", got, want)
	}
}

func TestInvalid(t *testing.T) {
	var tb Table[*peer]
	tb.Insert(netip.Prefix{}, pa)
	tb.Insert(netip.PrefixFrom(addr("10.0.0.0"), 33), pa)
	if tb.Len() != 0 {
		t.Fatalf("invalid prefixes inserted: Len %d", tb.Len())
	}
	tb.Insert(pfx("0.0.0.0/0"), pa)
	tb.Insert(pfx("::/0"), pa)
	if _, ok := tb.Lookup(netip.Addr{}); ok {
		t.Fatal("zero Addr matched")
	}
	for _, n := range []int{0, 3, 5, 15, 17} {
		if _, ok := tb.LookupBytes(make([]byte, n)); ok {
			t.Fatalf("LookupBytes of %d bytes matched", n)
		}
	}
}

// TestConcurrentLookups runs lookups from several goroutines with no writer,
// which the documented contract allows; run with -race.
func TestConcurrentLookups(t *testing.T) {
	tb := benchTable(200)
	want4, _ := tb.Lookup(addr("10.200.0.1"))
	if want4 != pb {
		t.Fatalf("10.200.0.1 -> %v, want b", want4)
	}
	done := make(chan bool)
	for g := 0; g < 4; g++ {
		go func() {
			ok := true
			for i := 0; i < 2000; i++ {
				if v, _ := tb.Lookup(addr("10.200.0.1")); v != pb {
					ok = false
				}
				if v, _ := tb.LookupIPv6(addr("2001:db8::1").As16()); v != pa {
					ok = false
				}
			}
			done <- ok
		}()
	}
	for g := 0; g < 4; g++ {
		if !<-done {
			t.Fatal("concurrent lookup returned a wrong owner")
		}
	}
}

// reference is the naive model: a map of prefixes, scanned for the longest
// one containing the address.
type reference map[netip.Prefix]int

func (r reference) lookup(a netip.Addr) (int, bool) {
	best, bestBits, found := 0, -1, false
	for p, v := range r {
		if p.Contains(a) && p.Bits() > bestBits {
			best, bestBits, found = v, p.Bits(), true
		}
	}
	return best, found
}

// randomAddr derives an address from one of a few bases, flipping a few
// random bits, so that prefixes and lookups overlap heavily.
func randomAddr(r *rand.Rand, bases []netip.Addr) netip.Addr {
	b := bases[r.IntN(len(bases))].AsSlice()
	for k := r.IntN(4); k > 0; k-- {
		i := r.IntN(len(b) * 8)
		b[i/8] ^= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestAgainstReference(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0xa11))
			var bases []netip.Addr
			for i := 0; i < 6; i++ {
				var b4 [4]byte
				var b16 [16]byte
				for j := range b4 {
					b4[j] = byte(r.Uint32())
				}
				for j := range b16 {
					b16[j] = byte(r.Uint32())
				}
				bases = append(bases, netip.AddrFrom4(b4), netip.AddrFrom16(b16))
			}
			// Mapped addresses must stay apart from their IPv4 twins.
			bases = append(bases, netip.AddrFrom16(bases[0].As16()))

			var tb Table[int]
			ref := reference{}
			const owners = 6
			for op := 0; op < 6000; op++ {
				a := randomAddr(r, bases)
				bitsN := r.IntN(a.BitLen() + 1)
				if r.IntN(4) == 0 { // favour long prefixes too
					bitsN = a.BitLen() - r.IntN(min(9, a.BitLen()+1))
				}
				p := netip.PrefixFrom(a, bitsN)
				v := r.IntN(owners)
				switch k := r.IntN(100); {
				case k < 55:
					tb.Insert(p, v)
					ref[p.Masked()] = v
				case k < 85:
					// Remove a present prefix (with a random, possibly
					// wrong, owner) or a random one.
					if len(ref) > 0 && r.IntN(2) == 0 {
						keys := make([]netip.Prefix, 0, len(ref))
						for q := range ref {
							keys = append(keys, q)
						}
						slices.SortFunc(keys, netip.Prefix.Compare)
						p = keys[r.IntN(len(keys))]
						if r.IntN(3) > 0 {
							v = ref[p]
						}
					}
					owned, ok := ref[p.Masked()]
					want := ok && owned == v
					if want {
						delete(ref, p.Masked())
					}
					if got := tb.Remove(p, v); got != want {
						t.Fatalf("op %d: Remove(%v, %d) = %v, want %v", op, p, v, got, want)
					}
				case k < 87:
					tb.RemoveValue(v)
					for q, o := range ref {
						if o == v {
							delete(ref, q)
						}
					}
				}
				for i := 0; i < 8; i++ {
					x := randomAddr(r, bases)
					got, ok := tb.Lookup(x)
					want, wok := ref.lookup(x)
					if got != want || ok != wok {
						t.Fatalf("op %d: Lookup(%v) = %d, %v; reference %d, %v", op, x, got, ok, want, wok)
					}
				}
				if tb.Len() != len(ref) {
					t.Fatalf("op %d: Len = %d, reference %d", op, tb.Len(), len(ref))
				}
				if op%500 == 0 {
					check(t, &tb)
					for v := range owners {
						var want []netip.Prefix
						for q, o := range ref {
							if o == v {
								want = append(want, q)
							}
						}
						slices.SortFunc(want, netip.Prefix.Compare)
						if got := tb.Prefixes(v); !slices.Equal(got, want) {
							t.Fatalf("op %d: Prefixes(%d) = %v, want %v", op, v, got, want)
						}
					}
				}
			}
			check(t, &tb)
			if len(ref) < 50 {
				t.Errorf("reference ended with only %d prefixes; the mix is too thin", len(ref))
			}
		})
	}
}

// benchTable builds a table shaped like a large deployment: n peers, each
// with an IPv4 /32 and an IPv6 /128 inside a common /16 and /64, plus a
// few wider routes.
func benchTable(n int) *Table[*peer] {
	var tb Table[*peer]
	r := rand.New(rand.NewPCG(7, 7))
	tb.Insert(pfx("0.0.0.0/0"), pa)
	tb.Insert(pfx("::/0"), pa)
	tb.Insert(pfx("10.0.0.0/8"), pb)
	for i := 0; i < n; i++ {
		p := &peer{}
		v4 := netip.AddrFrom4([4]byte{10, 7, byte(r.Uint32()), byte(r.Uint32())})
		b16 := addr("fd00:7::").As16()
		for j := 8; j < 16; j++ {
			b16[j] = byte(r.Uint32())
		}
		tb.Insert(netip.PrefixFrom(v4, 32), p)
		tb.Insert(netip.PrefixFrom(netip.AddrFrom16(b16), 128), p)
		tb.Insert(netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + i%16), byte(i), 0}), 24), p)
	}
	return &tb
}

func TestLookupNoAllocs(t *testing.T) {
	tb := benchTable(1000)
	a4, a6 := addr("10.7.1.2"), addr("fd00:7::1")
	b4, b6 := a4.As4(), a6.As16()
	allocs := testing.AllocsPerRun(1000, func() {
		tb.Lookup(a4)
		tb.Lookup(a6)
		tb.LookupIPv4(b4)
		tb.LookupIPv6(b6)
		tb.LookupBytes(b6[:])
	})
	if allocs != 0 {
		t.Fatalf("lookups allocate %v times", allocs)
	}
}

func BenchmarkLookup(b *testing.B) {
	tb := benchTable(5000)
	// Look up addresses of real peers (deep matches) and misses.
	var v4 [][4]byte
	var v6 [][16]byte
	for _, p := range tb.collectAllForBench() {
		if p.Addr().Is4() && p.Bits() == 32 {
			v4 = append(v4, p.Addr().As4())
		} else if p.Addr().Is6() && p.Bits() == 128 {
			v6 = append(v6, p.Addr().As16())
		}
	}
	b.Run("IPv4", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tb.LookupIPv4(v4[i%len(v4)])
			i++
		}
	})
	b.Run("IPv6", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tb.LookupIPv6(v6[i%len(v6)])
			i++
		}
	})
	b.Run("Addr", func(b *testing.B) {
		b.ReportAllocs()
		a := netip.AddrFrom4(v4[0])
		for b.Loop() {
			tb.Lookup(a)
		}
	})
}

// collectAllForBench returns every prefix in the table, any owner.
func (t *Table[T]) collectAllForBench() []netip.Prefix {
	var out []netip.Prefix
	var walk func(n *node[T], is4 bool)
	walk = func(n *node[T], is4 bool) {
		if n == nil {
			return
		}
		if n.set {
			out = append(out, n.prefix(is4))
		}
		walk(n.child[0], is4)
		walk(n.child[1], is4)
	}
	walk(t.v4, true)
	walk(t.v6, false)
	return out
}
