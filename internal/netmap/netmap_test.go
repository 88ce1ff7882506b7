package netmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/pubkey"
)

func TestJSONRoundTrip(t *testing.T) {
	m := baseMap()
	m.Self.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:41641")}
	m.Self.LastSeen = time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	m.Peers[0].Online = true
	m.DNS = DNSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("100.100.100.100")}, SearchDomains: []string{"warren.internal"}}
	m.PacketFilter = json.RawMessage(`{ "allow" : ["*"] }`)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"protocolVersion":1`, `"version":5`, `"self":{"id":1,"name":"self"`,
		`"key":"` + m.Self.Key.String() + `"`, `"endpoints":["[2001:db8::1]:41641"]`, `"allowedIPs":["100.64.0.1/32"]`,
		`"lastSeen":"2026-01-02T02:04:05.000000006Z"`, `"expiry":"0001-01-01T00:00:00Z"`,
		`"dns":{"nameservers":["100.100.100.100"],"searchDomains":["warren.internal"],"records":[],"zones":[],"routes":[]}`,
		`"packetFilter":{"allow":["*"]}`, `"domain":"warren.internal"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("encoding lacks %s:\n%s", want, b)
		}
	}
	got, err := DecodeNetworkMap(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(m) {
		t.Fatalf("round trip: got %+v\nwant %+v", got, m)
	}
	b2, _ := json.Marshal(got)
	if !bytes.Equal(b, b2) {
		t.Fatalf("re-encoding differs:\n%s\n%s", b, b2)
	}
	// Nil and empty lists encode the same.
	e := baseMap()
	e.Peers = nil
	f := baseMap()
	f.Peers = []Node{}
	f.Self.Endpoints = []netip.AddrPort{}
	eb, _ := json.Marshal(e)
	fb, _ := json.Marshal(f)
	if !bytes.Equal(eb, fb) || !strings.Contains(string(eb), `"peers":[]`) {
		t.Errorf("nil/empty encode differently:\n%s\n%s", eb, fb)
	}
	if _, err := DecodeNetworkMap(bytes.Replace(b, []byte(`"protocolVersion":1`), []byte(`"protocolVersion":2`), 1)); err == nil {
		t.Error("other protocol version accepted")
	}
	if _, err := DecodeNetworkMap(bytes.Replace(b, []byte(m.Self.Key.String()), []byte("AAAA"), 1)); err == nil {
		t.Error("short key accepted")
	}
}

func TestDeltaJSON(t *testing.T) {
	k := baseMap().Self.Key
	d := Delta{From: 1, To: 2, PeersRemoved: []uint64{3},
		PeersChanged: []PeerChange{{ID: 2, Endpoints: &[]netip.AddrPort{}, Online: ptr(false), Key: &k}}}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"from":1,"to":2,"peersRemoved":[3],"peersChanged":[{"id":2,"key":"` + k.String() + `","endpoints":[],"online":false}]}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	d2, err := DecodeDelta(b)
	if err != nil {
		t.Fatal(err)
	}
	c := d2.PeersChanged[0]
	if c.Endpoints == nil || len(*c.Endpoints) != 0 || c.Online == nil || *c.Online || *c.Key != k || c.Name != nil {
		t.Fatalf("decoded %+v", c)
	}
	for _, bad := range []string{`{"from":2,"to":2}`, `{"from":1,"to":2,"peersRemoved":[3,3]}`, `[`, `{"from":1,"to":2,"peersChanged":[{"id":1,"key":"x"}]}`} {
		if _, err := DecodeDelta([]byte(bad)); err == nil {
			t.Errorf("DecodeDelta(%s) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(m *NetworkMap)
		ok   bool
	}{
		{"base", func(m *NetworkMap) {}, true},
		{"no peers", func(m *NetworkMap) { m.Peers = nil }, true},
		{"address outside any particular prefix", func(m *NetworkMap) {
			m.Peers[0].Addresses = []netip.Prefix{netip.MustParsePrefix("203.0.113.9/32"), netip.MustParsePrefix("2001:db8::9/128")}
		}, true},
		{"no domain", func(m *NetworkMap) { m.Domain = "" }, true},
		{"zero id", func(m *NetworkMap) { m.Peers[0].ID = 0 }, false},
		{"duplicate id", func(m *NetworkMap) { m.Peers[1].ID = 2 }, false},
		{"peer with self id", func(m *NetworkMap) { m.Peers[0].ID = 1 }, false},
		{"unsorted", func(m *NetworkMap) { m.Peers[0], m.Peers[1] = m.Peers[1], m.Peers[0] }, false},
		{"zero key", func(m *NetworkMap) { m.Peers[0].Key = pubkey.Node{} }, false},
		{"duplicate key", func(m *NetworkMap) { m.Peers[0].Key = m.Peers[1].Key }, false},
		{"key of self", func(m *NetworkMap) { m.Peers[0].Key = m.Self.Key }, false},
		{"duplicate name", func(m *NetworkMap) { m.Peers[0].Name = "b" }, false},
		{"upper-case name", func(m *NetworkMap) { m.Peers[0].Name = "Laptop" }, false},
		{"empty name", func(m *NetworkMap) { m.Peers[0].Name = "" }, false},
		{"name with dot", func(m *NetworkMap) { m.Peers[0].Name = "a.b" }, false},
		{"leading dash", func(m *NetworkMap) { m.Peers[0].Name = "-a" }, false},
		{"name too long", func(m *NetworkMap) { m.Peers[0].Name = strings.Repeat("a", 64) }, false},
		{"name 63", func(m *NetworkMap) { m.Peers[0].Name = strings.Repeat("a", 63) }, true},
		{"duplicate address", func(m *NetworkMap) { m.Peers[0].Addresses = m.Peers[1].Addresses }, false},
		{"address of self", func(m *NetworkMap) { m.Peers[0].Addresses = m.Self.Addresses }, false},
		{"same address twice on one node", func(m *NetworkMap) {
			m.Peers[0].Addresses = append(m.Peers[0].Addresses, m.Peers[0].Addresses[0])
		}, false},
		{"address not a host", func(m *NetworkMap) { m.Peers[0].Addresses = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/24")} }, false},
		{"invalid address", func(m *NetworkMap) { m.Peers[0].Addresses = []netip.Prefix{{}} }, false},
		{"allowed IP not masked", func(m *NetworkMap) { m.Peers[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")} }, false},
		{"endpoint port 0", func(m *NetworkMap) {
			m.Peers[0].Endpoints = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:0")}
		}, false},
		{"bad domain", func(m *NetworkMap) { m.Domain = "warren..internal" }, false},
		{"bad search domain", func(m *NetworkMap) { m.DNS.SearchDomains = []string{"a_b"} }, false},
		{"bad nameserver", func(m *NetworkMap) { m.DNS.Nameservers = []netip.Addr{{}} }, false},
		{"bad filter", func(m *NetworkMap) { m.PacketFilter = json.RawMessage("{") }, false},
		{"time out of range", func(m *NetworkMap) { m.Peers[0].Expiry = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := baseMap()
			tc.edit(m)
			err := m.Validate()
			if tc.ok && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestDNSRecordValidate(t *testing.T) {
	good := []DNSRecord{
		{"db.warren.internal", "A", 60, "100.64.0.9"},
		{"db.corp.example.com", "A", 60, "node:alpha"},
		{"v6.example.com", "AAAA", 60, "fd00::1"},
		{"*.apps.example.com", "CNAME", 60, "alpha.warren.internal"},
		{"example.com", "TXT", 60, "v=spf1 -all"},
		{"_sip._tcp.example.com", "SRV", 60, "10 5 5060 alpha.warren.internal"},
		{"example.com", "MX", 60, "10 mail.example.com"},
	}
	for _, r := range good {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	bad := map[string]DNSRecord{
		"single label":   {"db", "A", 60, "1.2.3.4"},
		"upper case":     {"DB.example.com", "A", 60, "1.2.3.4"},
		"inner wildcard": {"a.*.example.com", "A", 60, "1.2.3.4"},
		"unknown type":   {"a.example.com", "NS", 60, "x.example.com"},
		"zero TTL":       {"a.example.com", "A", 0, "1.2.3.4"},
		"v6 in A":        {"a.example.com", "A", 60, "fd00::1"},
		"v4 in AAAA":     {"a.example.com", "AAAA", 60, "1.2.3.4"},
		"bad node ref":   {"a.example.com", "A", 60, "node:Not_A_Label"},
		"CNAME to self":  {"a.example.com", "CNAME", 60, "a.example.com"},
		"SRV fields":     {"_x._tcp.example.com", "SRV", 60, "10 5 alpha.warren.internal"},
		"SRV port":       {"_x._tcp.example.com", "SRV", 60, "10 5 70000 alpha.warren.internal"},
		"MX fields":      {"example.com", "MX", 60, "mail.example.com"},
		"empty TXT":      {"example.com", "TXT", 60, ""},
	}
	for name, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("%s: %+v accepted", name, r)
		}
	}
	m := &NetworkMap{DNS: DNSConfig{Routes: []DNSRoute{{Domain: "corp.example.com"}}}}
	if err := m.Validate(); err == nil {
		t.Error("split-DNS route without resolvers accepted")
	}
}
