// Package dns is Warren's per-node resolver (MagicDNS): it answers
// authoritatively for the tailnet domain (a name per node, A and AAAA for
// its tunnel addresses, PTR for the reverse names of those addresses), for
// the custom records and zones an admin defines (A, AAAA, CNAME, TXT, SRV,
// MX, wildcards, records that follow a node's addresses), forwards split-DNS
// domains to their own resolvers and everything else to the host's original
// upstream resolvers through a TTL-honouring cache, and serves all of it
// over UDP and TCP with EDNS0 and truncation, answering only sources the
// embedder allows. It takes plain Go values (Config), validated here so the
// coordination server can reuse the same checks for admin input; FromNetmap
// builds the node records from a network map.
package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/netmap"
)

// Record types supported as custom records.
const (
	TypeA     = "A"
	TypeAAAA  = "AAAA"
	TypeCNAME = "CNAME"
	TypeTXT   = "TXT"
	TypeSRV   = "SRV"
	TypeMX    = "MX"
)

// TTL bounds and defaults, in seconds.
const (
	DefaultTTL     = 300   // custom records with TTL 0
	DefaultNodeTTL = 60    // node A/AAAA/PTR records when Config.NodeTTL is 0
	MaxTTL         = 86400 // largest TTL of node answers and of cached upstream answers
	NegativeTTL    = 60    // SOA minimum: how long resolvers cache our NXDOMAIN/NODATA
)

// ServiceIPv4 is the address every node answers DNS at. It must never be an
// upstream (the resolver would forward to itself).
var ServiceIPv4 = netip.MustParseAddr("100.100.100.100")

// Config is everything the resolver answers from. The zero value is valid
// and answers nothing authoritatively (and forwards nowhere: SERVFAIL).
// Names may be given with or without a trailing dot, in any case.
type Config struct {
	// Domain is the tailnet domain, e.g. "warren.internal". Each node is
	// <name>.<Domain>. Empty: no node names, no PTR.
	Domain string
	// Nodes maps a node name (a DNS label) to its tunnel addresses.
	Nodes map[string][]netip.Addr
	// NodeTTL is the TTL of node A/AAAA/PTR answers; 0 means DefaultNodeTTL.
	NodeTTL uint32
	// Records are custom records; each lies in Domain or one of Zones.
	Records []Record
	// Zones are custom zones this node is authoritative for (besides
	// Domain), e.g. "corp.example.com". Names under them that no record
	// defines are NXDOMAIN, never forwarded.
	Zones []string
	// SplitDNS maps a domain to the resolvers its queries go to (in order).
	// The longest matching suffix wins, against each other and against the
	// authoritative zones.
	SplitDNS map[string][]netip.AddrPort
	// Upstreams receive every other query, tried in order.
	Upstreams []netip.AddrPort
	// SearchDomains are passed through for the host's resolver setup; the
	// resolver itself answers fully qualified names only.
	SearchDomains []string
	// TunnelPrefixes are the tunnel address ranges: a reverse query for an
	// address inside them that no node holds is NXDOMAIN instead of being
	// forwarded upstream. Optional.
	TunnelPrefixes []netip.Prefix
}

// Record is one custom record. Data is in presentation form:
//
//	A      an IPv4 address                     10.0.0.5
//	AAAA   an IPv6 address                     fd00::5
//	CNAME  a domain name                       db.warren.internal
//	TXT    text (split into 255-byte strings)  v=spf1 -all
//	SRV    priority weight port target         10 5 5432 db.warren.internal
//	MX     preference host                     10 mail.corp.example.com
//
// An A, AAAA or CNAME record may instead name a node in Node (Data empty):
// A/AAAA then answer that node's current addresses of the family, and
// CNAME points at <node>.<Domain>; both follow the node when it changes.
// Name may start with the wildcard label "*" (RFC 4592).
type Record struct {
	Name string
	Type string
	TTL  uint32 // seconds; 0: DefaultTTL, or the node TTL for A/AAAA targeting a node
	Data string
	Node string // target node name, for A, AAAA, CNAME
}

// String returns the record in the form ParseRecord reads.
func (r Record) String() string {
	data := r.Data
	if r.Node != "" {
		data = "@" + r.Node
	}
	if r.TTL == 0 {
		return fmt.Sprintf("%s %s %s", r.Name, r.Type, data)
	}
	return fmt.Sprintf("%s %d %s %s", r.Name, r.TTL, r.Type, data)
}

// ParseRecord reads a record from one line "NAME [TTL] TYPE DATA", where a
// DATA of "@node" targets a node (A, AAAA, CNAME). The type is case
// insensitive; the result is validated by ValidateRecord.
func ParseRecord(s string) (Record, error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return Record{}, fmt.Errorf("dns: record %q: want NAME [TTL] TYPE DATA", s)
	}
	r := Record{Name: f[0]}
	i := 1
	if n, err := strconv.ParseUint(f[1], 10, 32); err == nil {
		r.TTL = uint32(n)
		i = 2
	} else if f[1] != "" && f[1][0] >= '0' && f[1][0] <= '9' {
		return Record{}, fmt.Errorf("dns: record %q: bad TTL %q", s, f[1])
	}
	if len(f) < i+2 {
		return Record{}, fmt.Errorf("dns: record %q: want NAME [TTL] TYPE DATA", s)
	}
	r.Type = strings.ToUpper(f[i])
	data := f[i+1:]
	if r.Type == TypeTXT {
		r.Data = afterFields(s, i+1) // keep the text's inner spacing
	} else if len(data) == 1 && strings.HasPrefix(data[0], "@") {
		r.Node = data[0][1:]
	} else {
		r.Data = strings.Join(data, " ")
	}
	return r, ValidateRecord(r)
}

// ValidateRecord checks one record on its own: name, type, TTL, data and
// node target syntax. Config.Validate adds the checks that need the whole
// configuration (zone membership, CNAME exclusivity).
func ValidateRecord(r Record) error {
	where := fmt.Sprintf("dns: record %q %s", r.Name, r.Type)
	if err := dnsname.CheckOwner(r.Name); err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	// The bounds of custom records are the control protocol's (netmap),
	// so a node never refuses a record the server accepted.
	if r.TTL > netmap.MaxRecordTTL {
		return fmt.Errorf("%s: TTL %d above %d", where, r.TTL, netmap.MaxRecordTTL)
	}
	if r.Node != "" {
		switch r.Type {
		case TypeA, TypeAAAA, TypeCNAME:
		default:
			return fmt.Errorf("%s: only A, AAAA and CNAME records can target a node", where)
		}
		if r.Data != "" {
			return fmt.Errorf("%s: both data %q and node %q given", where, r.Data, r.Node)
		}
		if !dnsname.IsLabel(r.Node) {
			return fmt.Errorf("%s: node %q is not a node name", where, r.Node)
		}
		return nil
	}
	if r.Data == "" {
		return fmt.Errorf("%s: no data", where)
	}
	switch r.Type {
	case TypeA, TypeAAAA:
		a, err := netip.ParseAddr(r.Data)
		if err != nil || a.Zone() != "" || a.Is4In6() || a.Is4() != (r.Type == TypeA) {
			fam := "IPv4"
			if r.Type == TypeAAAA {
				fam = "IPv6"
			}
			return fmt.Errorf("%s: %q is not an %s address", where, r.Data, fam)
		}
	case TypeCNAME:
		if err := dnsname.Check(r.Data); err != nil {
			return fmt.Errorf("%s: target: %v", where, err)
		}
	case TypeTXT:
		if len(r.Data) > netmap.MaxTXTLen {
			return fmt.Errorf("%s: text of %d bytes above %d", where, len(r.Data), netmap.MaxTXTLen)
		}
	case TypeSRV:
		f := strings.Fields(r.Data)
		if len(f) != 4 {
			return fmt.Errorf("%s: want \"priority weight port target\", got %q", where, r.Data)
		}
		for i, what := range []string{"priority", "weight", "port"} {
			if _, err := strconv.ParseUint(f[i], 10, 16); err != nil {
				return fmt.Errorf("%s: %s %q is not a number 0-65535", where, what, f[i])
			}
		}
		if f[3] != "." {
			if err := dnsname.Check(f[3]); err != nil {
				return fmt.Errorf("%s: target: %v", where, err)
			}
		}
	case TypeMX:
		f := strings.Fields(r.Data)
		if len(f) != 2 {
			return fmt.Errorf("%s: want \"preference host\", got %q", where, r.Data)
		}
		if _, err := strconv.ParseUint(f[0], 10, 16); err != nil {
			return fmt.Errorf("%s: preference %q is not a number 0-65535", where, f[0])
		}
		if err := dnsname.Check(f[1]); err != nil {
			return fmt.Errorf("%s: host: %v", where, err)
		}
	default:
		return fmt.Errorf("%s: unsupported type (want A, AAAA, CNAME, TXT, SRV or MX)", where)
	}
	return nil
}

// ParseResolver reads a resolver address "IP" or "IP:port" ("[v6]:port"),
// port 53 by default.
func ParseResolver(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, checkResolver(ap)
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dns: resolver %q is not IP or IP:port", s)
	}
	ap := netip.AddrPortFrom(a, 53)
	return ap, checkResolver(ap)
}

func checkResolver(ap netip.AddrPort) error {
	a := ap.Addr()
	switch {
	case !ap.IsValid() || ap.Port() == 0:
		return fmt.Errorf("dns: resolver %s is not a valid IP:port", ap)
	case a.Unmap() == ServiceIPv4:
		return fmt.Errorf("dns: resolver %s is the node's own DNS service", ap)
	case a.IsUnspecified() || a.IsMulticast():
		return fmt.Errorf("dns: resolver %s is not a unicast address", ap)
	}
	return nil
}

// Validate checks the whole configuration; the error names the first
// problem on one line.
func (c *Config) Validate() error {
	if c.Domain != "" {
		if err := dnsname.Check(c.Domain); err != nil {
			return fmt.Errorf("dns: domain: %v", err)
		}
	}
	if c.NodeTTL > MaxTTL {
		return fmt.Errorf("dns: node TTL %d above %d", c.NodeTTL, MaxTTL)
	}
	owner := map[netip.Addr]string{}
	for _, name := range sortedKeys(c.Nodes) {
		if !dnsname.IsLabel(name) {
			return fmt.Errorf("dns: node %q: name is not a lower-case DNS label", name)
		}
		for _, a := range c.Nodes[name] {
			if !a.IsValid() || a.Zone() != "" {
				return fmt.Errorf("dns: node %q: invalid address %s", name, a)
			}
			if o, dup := owner[a.Unmap()]; dup {
				return fmt.Errorf("dns: node %q: address %s also held by node %q", name, a, o)
			}
			owner[a.Unmap()] = name
		}
	}
	zones := map[string]bool{}
	if c.Domain != "" {
		zones[canon(c.Domain)] = true
	}
	for _, z := range c.Zones {
		if err := dnsname.Check(z); err != nil {
			return fmt.Errorf("dns: zone %q: %v", z, err)
		}
		if zones[canon(z)] {
			return fmt.Errorf("dns: zone %q given twice (or equal to the domain)", z)
		}
		zones[canon(z)] = true
	}
	type seen struct{ cname, other bool }
	owners := map[string]*seen{}
	for _, r := range c.Records {
		if err := ValidateRecord(r); err != nil {
			return err
		}
		n := canon(r.Name)
		if zoneOf(n, zones) == "" {
			return fmt.Errorf("dns: record %q %s: not in the domain or any zone", r.Name, r.Type)
		}
		if r.Node != "" && c.Domain == "" {
			return fmt.Errorf("dns: record %q %s: a node target needs the tailnet domain", r.Name, r.Type)
		}
		if r.Type == TypeCNAME && zones[n] {
			return fmt.Errorf("dns: record %q CNAME: a zone apex cannot be a CNAME", r.Name)
		}
		s := owners[n]
		if s == nil {
			s = &seen{}
			owners[n] = s
		}
		if r.Type == TypeCNAME {
			if s.cname || s.other {
				return fmt.Errorf("dns: record %q CNAME: a CNAME must be the only record of its name", r.Name)
			}
			s.cname = true
		} else {
			if s.cname {
				return fmt.Errorf("dns: record %q %s: name already has a CNAME", r.Name, r.Type)
			}
			s.other = true
		}
	}
	for _, d := range sortedKeys(c.SplitDNS) {
		if err := dnsname.Check(d); err != nil {
			return fmt.Errorf("dns: split DNS domain %q: %v", d, err)
		}
		if zones[canon(d)] {
			return fmt.Errorf("dns: split DNS domain %q is also an authoritative zone", d)
		}
		if len(c.SplitDNS[d]) == 0 {
			return fmt.Errorf("dns: split DNS domain %q has no resolvers", d)
		}
		for _, ap := range c.SplitDNS[d] {
			if err := checkResolver(ap); err != nil {
				return fmt.Errorf("dns: split DNS domain %q: %v", d, strings.TrimPrefix(err.Error(), "dns: "))
			}
		}
	}
	for _, ap := range c.Upstreams {
		if err := checkResolver(ap); err != nil {
			return fmt.Errorf("dns: upstream: %v", strings.TrimPrefix(err.Error(), "dns: "))
		}
	}
	for _, d := range c.SearchDomains {
		if err := dnsname.Check(d); err != nil {
			return fmt.Errorf("dns: search domain %q: %v", d, err)
		}
	}
	for _, p := range c.TunnelPrefixes {
		if !p.IsValid() {
			return errors.New("dns: invalid tunnel prefix")
		}
	}
	return nil
}

// FromNetmap builds a Config from a network map: the domain, a node entry
// for Self and every peer, and the map's search domains, on top of custom
// (which supplies records, zones, split DNS and the host's upstreams). The
// map's nameservers are where nodes answer (ServiceIPv4 and the IPv6
// service address), never upstreams, so they are not used here.
func FromNetmap(nm *netmap.NetworkMap, custom Config) Config {
	c := custom
	c.Domain = nm.Domain
	c.Nodes = make(map[string][]netip.Addr, len(nm.Peers)+1)
	add := func(n *netmap.Node) {
		if n.Name == "" {
			return
		}
		addrs := make([]netip.Addr, 0, len(n.Addresses))
		for _, p := range n.Addresses {
			addrs = append(addrs, p.Addr())
		}
		c.Nodes[n.Name] = addrs
	}
	add(&nm.Self)
	for i := range nm.Peers {
		add(&nm.Peers[i])
	}
	if len(nm.DNS.SearchDomains) > 0 {
		c.SearchDomains = slices.Clone(nm.DNS.SearchDomains)
	}
	return c
}

// --- names ---

// canon returns the lower-case fully qualified form of a name.
func canon(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, ".")) + "."
}

// zoneOf returns the longest zone (canonical) that contains name, or "".
func zoneOf(name string, zones map[string]bool) string {
	for n := name; ; {
		if zones[n] {
			return n
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return ""
		}
		n = n[i+1:]
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// afterFields returns s without its first n whitespace-separated fields.
func afterFields(s string, n int) string {
	s = strings.TrimSpace(s)
	for range n {
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			return ""
		}
		s = strings.TrimLeft(s[i:], " \t")
	}
	return s
}
