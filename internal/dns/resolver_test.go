package dns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

func TestNodeNames(t *testing.T) {
	_, addr := serve(t, baseConfig(), Options{}, nil)
	for _, network := range []string{"udp", "tcp"} {
		m := query(t, addr, network, "alpha.warren.internal.", mdns.TypeA, 0)
		if m.Rcode != mdns.RcodeSuccess || !m.Authoritative || !slices.Equal(addrs(m), []string{"100.64.0.1"}) {
			t.Fatalf("%s: alpha A: %v", network, m)
		}
		if m.Answer[0].Header().Ttl != DefaultNodeTTL {
			t.Errorf("node TTL %d, want %d", m.Answer[0].Header().Ttl, DefaultNodeTTL)
		}
	}
	// Case-insensitive; the owner keeps the client's spelling.
	m := query(t, addr, "udp", "BeTa.Warren.INTERNAL.", mdns.TypeAAAA, 0)
	if !slices.Equal(addrs(m), []string{beta6.String()}) || m.Answer[0].Header().Name != "BeTa.Warren.INTERNAL." {
		t.Fatalf("beta AAAA: %v", m)
	}
	// NXDOMAIN vs NODATA, both with the zone's SOA.
	m = query(t, addr, "udp", "gamma.warren.internal.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeNameError || len(m.Answer) != 0 || !hasSOA(m, "warren.internal.") || !m.Authoritative {
		t.Fatalf("unknown node: want NXDOMAIN with SOA, got %v", m)
	}
	m = query(t, addr, "udp", "alpha.warren.internal.", mdns.TypeMX, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 || !hasSOA(m, "warren.internal.") {
		t.Fatalf("MX of a node: want NODATA with SOA, got %v", m)
	}
	// The apex exists: SOA answer, NODATA for A.
	m = query(t, addr, "udp", "warren.internal.", mdns.TypeSOA, 0)
	if len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != mdns.TypeSOA {
		t.Fatalf("apex SOA: %v", m)
	}
	m = query(t, addr, "udp", "warren.internal.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 {
		t.Fatalf("apex A: want NODATA, got %v", m)
	}
	// A name under a node that does not exist.
	m = query(t, addr, "udp", "x.alpha.warren.internal.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeNameError {
		t.Fatalf("below a node: want NXDOMAIN, got %v", m)
	}
	// No upstream: a name outside our zones fails.
	m = query(t, addr, "udp", "example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("no upstream: want SERVFAIL, got %v", m)
	}
}

func TestPTR(t *testing.T) {
	c := baseConfig()
	c.TunnelPrefixes = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:115c:a1e0::/48")}
	_, addr := serve(t, c, Options{}, nil)
	for a, want := range map[netip.Addr]string{alpha4: "alpha.warren.internal.", beta6: "beta.warren.internal."} {
		rev, _ := mdns.ReverseAddr(a.String())
		m := query(t, addr, "udp", rev, mdns.TypePTR, 0)
		if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].(*mdns.PTR).Ptr != want || !m.Authoritative {
			t.Fatalf("PTR %s: %v", a, m)
		}
		m = query(t, addr, "udp", rev, mdns.TypeA, 0)
		if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 {
			t.Fatalf("A at %s: want NODATA, got %v", rev, m)
		}
	}
	for _, a := range []string{"100.64.9.9", "fd7a:115c:a1e0::99"} {
		rev, _ := mdns.ReverseAddr(a)
		m := query(t, addr, "udp", rev, mdns.TypePTR, 0)
		if m.Rcode != mdns.RcodeNameError || len(m.Ns) != 1 {
			t.Fatalf("PTR %s in the tunnel: want NXDOMAIN with SOA, got %v", a, m)
		}
	}
	if got := m6zone(); got != "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa." {
		t.Errorf("reverse zone of the /48: %s", got)
	}
}

func m6zone() string { return reverseZone(netip.MustParsePrefix("fd7a:115c:a1e0::/48")) }

// corpConfig adds a custom zone and records in both zones.
func corpConfig() Config {
	c := baseConfig()
	c.Zones = []string{"corp.example.com"}
	c.Records = []Record{
		{Name: "www.corp.example.com", Type: "A", Data: "10.0.0.80", TTL: 120},
		{Name: "db.corp.example.com", Type: "CNAME", Node: "alpha"},
		{Name: "pg.corp.example.com", Type: "CNAME", Data: "db.corp.example.com"},
		{Name: "api.warren.internal", Type: "A", Node: "beta"},
		{Name: "api.warren.internal", Type: "AAAA", Node: "beta"},
		{Name: "*.apps.corp.example.com", Type: "A", Data: "10.0.0.7"},
		{Name: "*.apps.corp.example.com", Type: "TXT", Data: "wild"},
		{Name: "real.apps.corp.example.com", Type: "TXT", Data: "real"},
		{Name: "_pg._tcp.corp.example.com", Type: "SRV", Data: "10 5 5432 alpha.warren.internal"},
		{Name: "corp.example.com", Type: "MX", Data: "10 mail.corp.example.com"},
		{Name: "mail.corp.example.com", Type: "A", Data: "10.0.0.25"},
		{Name: "corp.example.com", Type: "TXT", Data: "v=spf1 -all"},
		{Name: "long.corp.example.com", Type: "TXT", Data: strings.Repeat("x", 300) + `\end`},
		{Name: "loop1.corp.example.com", Type: "CNAME", Data: "loop2.corp.example.com"},
		{Name: "loop2.corp.example.com", Type: "CNAME", Data: "loop1.corp.example.com"},
		{Name: "alpha.warren.internal", Type: "TXT", Data: "node note"},
		{Name: "beta.warren.internal", Type: "A", Data: "10.9.9.9"},
	}
	return c
}

func TestCustomRecords(t *testing.T) {
	_, addr := serve(t, corpConfig(), Options{}, nil)
	m := query(t, addr, "udp", "www.corp.example.com.", mdns.TypeA, 0)
	if !slices.Equal(addrs(m), []string{"10.0.0.80"}) || m.Answer[0].Header().Ttl != 120 || !m.Authoritative {
		t.Fatalf("custom A: %v", m)
	}
	// Node-targeting A/AAAA.
	m = query(t, addr, "udp", "api.warren.internal.", mdns.TypeAAAA, 0)
	if !slices.Equal(addrs(m), []string{beta6.String()}) || m.Answer[0].Header().Ttl != DefaultNodeTTL {
		t.Fatalf("AAAA @beta (with the node's TTL): %v", m)
	}
	// TXT, long TXT split in 255-byte strings, backslash literal.
	m = query(t, addr, "tcp", "long.corp.example.com.", mdns.TypeTXT, 0)
	if len(m.Answer) != 1 {
		t.Fatalf("long TXT: %v", m)
	}
	txt := m.Answer[0].(*mdns.TXT).Txt
	if len(txt) != 2 || len(txt[0]) != 255 || !strings.HasSuffix(txt[1], `\\end`) {
		t.Fatalf("long TXT strings: %q", txt)
	}
	// SRV with the target's addresses as glue.
	m = query(t, addr, "udp", "_pg._tcp.corp.example.com.", mdns.TypeSRV, 0)
	if len(m.Answer) != 1 || m.Answer[0].(*mdns.SRV).Port != 5432 || len(m.Extra) != 2 {
		t.Fatalf("SRV: %v", m)
	}
	// MX and TXT at the zone apex, next to its SOA.
	m = query(t, addr, "udp", "corp.example.com.", mdns.TypeMX, 0)
	if len(m.Answer) != 1 || m.Answer[0].(*mdns.MX).Mx != "mail.corp.example.com." || len(m.Extra) != 1 {
		t.Fatalf("MX: %v", m)
	}
	m = query(t, addr, "udp", "corp.example.com.", mdns.TypeTXT, 0)
	if len(m.Answer) != 1 || m.Answer[0].(*mdns.TXT).Txt[0] != "v=spf1 -all" {
		t.Fatalf("apex TXT: %v", m)
	}
	// Custom records at a node's name: TXT adds, A replaces the node's A
	// (its AAAA stays).
	m = query(t, addr, "udp", "alpha.warren.internal.", mdns.TypeTXT, 0)
	if len(m.Answer) != 1 {
		t.Fatalf("TXT at a node: %v", m)
	}
	if m = query(t, addr, "udp", "alpha.warren.internal.", mdns.TypeA, 0); !slices.Equal(addrs(m), []string{"100.64.0.1"}) {
		t.Fatalf("node A next to a custom TXT: %v", m)
	}
	if m = query(t, addr, "udp", "beta.warren.internal.", mdns.TypeA, 0); !slices.Equal(addrs(m), []string{"10.9.9.9"}) {
		t.Fatalf("custom A over a node's: %v", m)
	}
	if m = query(t, addr, "udp", "beta.warren.internal.", mdns.TypeAAAA, 0); !slices.Equal(addrs(m), []string{beta6.String()}) {
		t.Fatalf("node AAAA under a custom A: %v", m)
	}
	// Unknown name in a custom zone: NXDOMAIN with that zone's SOA.
	m = query(t, addr, "udp", "nope.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeNameError || !hasSOA(m, "corp.example.com.") {
		t.Fatalf("unknown custom name: %v", m)
	}
	// Empty non-terminal: _tcp.corp.example.com exists (NODATA).
	m = query(t, addr, "udp", "_tcp.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 || !hasSOA(m, "corp.example.com.") {
		t.Fatalf("empty non-terminal: want NODATA, got %v", m)
	}
	// ANY returns every type.
	m = query(t, addr, "tcp", "corp.example.com.", mdns.TypeANY, 0)
	if len(m.Answer) != 3 {
		t.Fatalf("ANY at apex: want SOA, MX, TXT; got %v", m)
	}
}

func TestWildcard(t *testing.T) {
	_, addr := serve(t, corpConfig(), Options{}, nil)
	for _, name := range []string{"foo.apps.corp.example.com.", "a.b.apps.corp.example.com.", "FOO.apps.corp.example.com."} {
		m := query(t, addr, "udp", name, mdns.TypeA, 0)
		if !slices.Equal(addrs(m), []string{"10.0.0.7"}) || m.Answer[0].Header().Name != name {
			t.Fatalf("wildcard A for %s: %v", name, m)
		}
	}
	// Wildcard NODATA: the wildcard has no AAAA.
	m := query(t, addr, "udp", "foo.apps.corp.example.com.", mdns.TypeAAAA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 {
		t.Fatalf("wildcard AAAA: want NODATA, got %v", m)
	}
	// An existing name is not covered by the wildcard (RFC 4592)...
	m = query(t, addr, "udp", "real.apps.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 {
		t.Fatalf("existing name: want NODATA, got %v", m)
	}
	m = query(t, addr, "udp", "real.apps.corp.example.com.", mdns.TypeTXT, 0)
	if len(m.Answer) != 1 || m.Answer[0].(*mdns.TXT).Txt[0] != "real" {
		t.Fatalf("existing name TXT: %v", m)
	}
	// ...nor are the names below it (closest encloser is real.apps...).
	m = query(t, addr, "udp", "x.real.apps.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeNameError {
		t.Fatalf("below an existing name: want NXDOMAIN, got %v", m)
	}
	// The wildcard does not cover its parent.
	m = query(t, addr, "udp", "apps.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 {
		t.Fatalf("wildcard's parent: want NODATA, got %v", m)
	}
}

func TestCNAMEChain(t *testing.T) {
	r, addr := serve(t, corpConfig(), Options{}, nil)
	// pg -> db -> alpha.warren.internal (node).
	m := query(t, addr, "udp", "pg.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 3 {
		t.Fatalf("chain: %v", m)
	}
	if c := m.Answer[1].(*mdns.CNAME); c.Hdr.Name != "db.corp.example.com." || c.Target != "alpha.warren.internal." {
		t.Fatalf("second hop: %v", c)
	}
	if !slices.Equal(addrs(m), []string{"100.64.0.1"}) {
		t.Fatalf("chain end: %v", m)
	}
	// CNAME query answers the CNAME itself.
	m = query(t, addr, "udp", "db.corp.example.com.", mdns.TypeCNAME, 0)
	if len(m.Answer) != 1 || m.Answer[0].(*mdns.CNAME).Target != "alpha.warren.internal." {
		t.Fatalf("CNAME query: %v", m)
	}
	// A loop fails instead of spinning.
	m = query(t, addr, "udp", "loop1.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("loop: want SERVFAIL, got %v", m)
	}

	// The node moves: the next answers follow it, with no restart.
	c := corpConfig()
	moved := netip.MustParseAddr("100.64.0.77")
	c.Nodes["alpha"] = []netip.Addr{moved}
	c.Nodes["beta"] = []netip.Addr{netip.MustParseAddr("100.64.0.78")}
	if err := r.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	m = query(t, addr, "udp", "pg.corp.example.com.", mdns.TypeA, 0)
	if !slices.Equal(addrs(m), []string{moved.String()}) {
		t.Fatalf("after the move: %v", m)
	}
	m = query(t, addr, "udp", "api.warren.internal.", mdns.TypeA, 0)
	if !slices.Equal(addrs(m), []string{"100.64.0.78"}) {
		t.Fatalf("A @beta after the move: %v", m)
	}
	m = query(t, addr, "udp", "api.warren.internal.", mdns.TypeAAAA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 {
		t.Fatalf("AAAA @beta without IPv6: want NODATA, got %v", m)
	}
	// A removed node: its addresses are gone (its name stays only for the
	// custom TXT there: NODATA), and so is its name without that TXT.
	delete(c.Nodes, "alpha")
	if err := r.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	m = query(t, addr, "udp", "pg.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 2 {
		t.Fatalf("chain to a removed node: want the CNAMEs and NODATA, got %v", m)
	}
	c.Records = slices.DeleteFunc(slices.Clone(c.Records), func(r Record) bool { return r.Name == "alpha.warren.internal" })
	if err := r.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	m = query(t, addr, "udp", "pg.corp.example.com.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeNameError || len(m.Answer) != 2 || !hasSOA(m, "warren.internal.") {
		t.Fatalf("chain to a removed node: want the CNAMEs and NXDOMAIN, got %v", m)
	}
	// An invalid update is refused and the old config stays.
	bad := c
	bad.Records = append(slices.Clone(c.Records), Record{Name: "x.elsewhere.org", Type: "A", Data: "1.2.3.4"})
	if err := r.SetConfig(bad); err == nil {
		t.Fatal("SetConfig accepted a record outside every zone")
	}
	if m = query(t, addr, "udp", "www.corp.example.com.", mdns.TypeA, 0); len(m.Answer) != 1 {
		t.Fatalf("after a refused update: %v", m)
	}
}
