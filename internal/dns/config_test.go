package dns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Record
	}{
		{"www.corp.example.com A 10.0.0.1", Record{Name: "www.corp.example.com", Type: "A", Data: "10.0.0.1"}},
		{"www.corp.example.com 120 aaaa fd00::1", Record{Name: "www.corp.example.com", Type: "AAAA", TTL: 120, Data: "fd00::1"}},
		{"db.corp.example.com CNAME @alpha", Record{Name: "db.corp.example.com", Type: "CNAME", Node: "alpha"}},
		{"api.warren.internal 60 A @beta", Record{Name: "api.warren.internal", Type: "A", TTL: 60, Node: "beta"}},
		{"corp.example.com TXT v=spf1  include:x -all ", Record{Name: "corp.example.com", Type: "TXT", Data: "v=spf1  include:x -all"}},
		{"corp.example.com 30 TXT 42 is  the answer", Record{Name: "corp.example.com", Type: "TXT", TTL: 30, Data: "42 is  the answer"}},
		{"_sip._tcp.corp.example.com SRV 10 5 5060 sip.corp.example.com", Record{Name: "_sip._tcp.corp.example.com", Type: "SRV", Data: "10 5 5060 sip.corp.example.com"}},
		{"corp.example.com MX 10 mail.corp.example.com.", Record{Name: "corp.example.com", Type: "MX", Data: "10 mail.corp.example.com."}},
		{"*.apps.corp.example.com A 10.0.0.7", Record{Name: "*.apps.corp.example.com", Type: "A", Data: "10.0.0.7"}},
	} {
		got, err := ParseRecord(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRecord(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if back, err := ParseRecord(got.String()); err != nil || (back != got && got.Type != TypeTXT) {
			t.Errorf("round trip of %q: %+v, %v", got.String(), back, err)
		}
	}
	for _, tc := range []struct{ in, err string }{
		{"www A", "want NAME [TTL] TYPE DATA"},
		{"www 12x A 1.2.3.4", "bad TTL"},
		{"www.x 99999999 A 1.2.3.4", "TTL 99999999 above 604800"},
		{"www.x A 1.2.3", "not an IPv4 address"},
		{"www.x A fd00::1", "not an IPv4 address"},
		{"www.x AAAA 1.2.3.4", "not an IPv6 address"},
		{"www.x AAAA ::ffff:1.2.3.4", "not an IPv6 address"},
		{"www.x NS ns.x", "unsupported type"},
		{"www.x TXT @alpha", ""}, // a TXT saying "@alpha" is text
		{"www.x SRV @alpha", "only A, AAAA and CNAME records can target a node"},
		{"www.x A @Alpha", "is not a node name"},
		{"-www.x A 1.2.3.4", "starts or ends with '-'"},
		{"w*w.x A 1.2.3.4", "character other than"},
		{"a.*.x A 1.2.3.4", "character other than"},
		{"www..x A 1.2.3.4", "empty or over-long label"},
		{"www.x CNAME bad_name!", "target"},
		{"www.x SRV 10 5 bad", "priority weight port target"},
		{"www.x SRV 10 5 70000 t.x", "port \"70000\""},
		{"www.x MX ten mail.x", "preference"},
		{"www.x MX 10", "preference host"},
		{strings.Repeat("a", 64) + ".x A 1.2.3.4", "over-long"},
	} {
		_, err := ParseRecord(tc.in)
		if tc.err == "" {
			if err != nil {
				t.Errorf("ParseRecord(%q): %v", tc.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseRecord(%q) error %v, want one line containing %q", tc.in, err, tc.err)
		}
	}
	if err := ValidateRecord(Record{Name: "t.x", Type: "TXT", Data: strings.Repeat("x", netmap.MaxTXTLen+1)}); err == nil {
		t.Error("over-long TXT accepted")
	}
	if err := ValidateRecord(Record{Name: "t.x", Type: "A", Data: "1.2.3.4", Node: "alpha"}); err == nil {
		t.Error("record with both data and node accepted")
	}
}

func TestParseResolver(t *testing.T) {
	for in, want := range map[string]string{
		"1.1.1.1": "1.1.1.1:53", "1.1.1.1:5353": "1.1.1.1:5353", "[2606:4700::1111]:53": "[2606:4700::1111]:53",
		"2606:4700::1111": "[2606:4700::1111]:53", "[::1]": "[::1]:53",
	} {
		if got, err := ParseResolver(in); err != nil || got.String() != want {
			t.Errorf("ParseResolver(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "dns.google", "1.1.1.1:0", "100.100.100.100", "0.0.0.0", "224.0.0.1:53"} {
		if _, err := ParseResolver(in); err == nil {
			t.Errorf("ParseResolver(%q) accepted", in)
		}
	}
}

func TestValidateConfig(t *testing.T) {
	ap := netip.MustParseAddrPort("192.0.2.53:53")
	for _, tc := range []struct {
		err string
		mod func(*Config)
	}{
		{"", func(c *Config) {}},
		{"domain", func(c *Config) { c.Domain = "bad domain" }},
		{"not a lower-case DNS label", func(c *Config) { c.Nodes["Gamma"] = nil }},
		{"also held by node", func(c *Config) { c.Nodes["gamma"] = []netip.Addr{alpha4} }},
		{"invalid address", func(c *Config) { c.Nodes["gamma"] = []netip.Addr{{}} }},
		{"given twice", func(c *Config) { c.Zones = append(c.Zones, "Corp.Example.com.") }},
		{"not in the domain or any zone", func(c *Config) {
			c.Records = append(c.Records, Record{Name: "www.example.org", Type: "A", Data: "1.2.3.4"})
		}},
		{"a zone apex cannot be a CNAME", func(c *Config) {
			c.Records = append(c.Records, Record{Name: "corp.example.com", Type: "CNAME", Data: "x.y"})
		}},
		{"must be the only record", func(c *Config) {
			c.Records = append(c.Records, Record{Name: "www.corp.example.com", Type: "CNAME", Data: "x.y"})
		}},
		{"already has a CNAME", func(c *Config) {
			c.Records = append(c.Records, Record{Name: "DB.corp.example.com.", Type: "TXT", Data: "x"})
		}},
		{"also an authoritative zone", func(c *Config) { c.SplitDNS = map[string][]netip.AddrPort{"corp.example.com": {ap}} }},
		{"has no resolvers", func(c *Config) { c.SplitDNS = map[string][]netip.AddrPort{"int.example.net": nil} }},
		{"node's own DNS service", func(c *Config) {
			c.Upstreams = []netip.AddrPort{netip.AddrPortFrom(ServiceIPv4, 53)}
		}},
		{"search domain", func(c *Config) { c.SearchDomains = []string{"a b"} }},
		{"node TTL", func(c *Config) { c.NodeTTL = MaxTTL + 1 }},
	} {
		c := corpConfig()
		tc.mod(&c)
		err := c.Validate()
		if tc.err == "" {
			if err != nil {
				t.Errorf("valid config: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "dns: ") {
			t.Errorf("want error containing %q, got %v", tc.err, err)
		}
	}
	var zero Config
	if err := zero.Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	c := Config{Records: []Record{{Name: "db.corp.example.com", Type: "CNAME", Node: "alpha"}}, Zones: []string{"corp.example.com"}}
	if _, err := NewResolver(c, Options{}); err == nil || !strings.Contains(err.Error(), "needs the tailnet domain") {
		t.Errorf("CNAME to a node without a domain: %v", err)
	}
}

func TestFromNetmap(t *testing.T) {
	key := func(b byte) (k noise.PublicKey) { k[0] = b; return k }
	pfx := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
	nm := &netmap.NetworkMap{
		Domain: "warren.internal",
		Self:   netmap.Node{ID: 1, Name: "alpha", Key: pubkey.Node{PublicKey: key(1)}, Addresses: []netip.Prefix{pfx(alpha4), pfx(alpha6)}},
		Peers:  []netmap.Node{{ID: 2, Name: "beta", Key: pubkey.Node{PublicKey: key(2)}, Addresses: []netip.Prefix{pfx(beta4)}}},
		DNS:    netmap.DNSConfig{SearchDomains: []string{"corp.example.com"}},
	}
	up := netip.MustParseAddrPort("192.0.2.53:53")
	custom := Config{Zones: []string{"corp.example.com"}, Upstreams: []netip.AddrPort{up}}
	c := FromNetmap(nm, custom)
	if c.Domain != "warren.internal" || !slices.Equal(c.Nodes["alpha"], []netip.Addr{alpha4, alpha6}) ||
		!slices.Equal(c.Nodes["beta"], []netip.Addr{beta4}) || len(c.Nodes) != 2 {
		t.Fatalf("nodes: %+v", c)
	}
	if !slices.Equal(c.Upstreams, []netip.AddrPort{up}) || !slices.Equal(c.SearchDomains, []string{"corp.example.com"}) || len(c.Zones) != 1 {
		t.Fatalf("custom parts: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// The map's nameservers are the service addresses, not upstreams.
	nm.DNS.Nameservers = []netip.Addr{ServiceIPv4}
	if c = FromNetmap(nm, custom); !slices.Equal(c.Upstreams, []netip.AddrPort{up}) {
		t.Fatalf("nameservers taken as upstreams: %v", c.Upstreams)
	}
}

func TestReverseNames(t *testing.T) {
	for _, s := range []string{"100.64.0.1", "1.2.3.4", "fd7a:115c:a1e0::1", "2001:db8::abcd:1"} {
		a := netip.MustParseAddr(s)
		name := mustReverse(t, a)
		if got, ok := reverseAddr(name); !ok || got != a {
			t.Errorf("reverseAddr(%s) = %v, %v; want %v", name, got, ok, a)
		}
	}
	for _, bad := range []string{"1.2.3.in-addr.arpa.", "01.2.3.4.in-addr.arpa.", "x.ip6.arpa.", "1.2.3.4.5.in-addr.arpa."} {
		if _, ok := reverseAddr(bad); ok {
			t.Errorf("reverseAddr(%q) accepted", bad)
		}
	}
	if got := reverseZone(netip.MustParsePrefix("100.64.0.0/10")); got != "100.in-addr.arpa." {
		t.Errorf("reverse zone of 100.64/10: %s", got)
	}
	if got := reverseZone(netip.MustParsePrefix("10.1.0.0/16")); got != "1.10.in-addr.arpa." {
		t.Errorf("reverse zone of 10.1/16: %s", got)
	}
}
