package dns

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"
)

// table is a Config compiled for lookups. It is immutable once built: the
// Resolver swaps whole tables, so a query sees one consistent snapshot.
type table struct {
	cfg       Config
	zones     map[string]*mdns.SOA // canonical apex -> its SOA
	names     map[string]*rrNode   // every name in our zones, empty non-terminals included
	ptr       map[string]string    // reverse name -> node FQDN
	nodeTTL   uint32
	split     map[string][]netip.AddrPort // canonical domain -> resolvers
	upstreams []netip.AddrPort
	tunnel    []netip.Prefix
}

// rrNode holds the records of one owner name, by type. A node with no
// records is an empty non-terminal (it exists: NODATA, not NXDOMAIN).
type rrNode struct {
	rrs   map[uint16][]mdns.RR
	cname *mdns.CNAME
}

func (n *rrNode) empty() bool { return n.cname == nil && len(n.rrs) == 0 }

// compile validates c and builds its table.
func compile(c Config, serial uint32) (*table, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	t := &table{
		cfg:       c,
		zones:     map[string]*mdns.SOA{},
		names:     map[string]*rrNode{},
		ptr:       map[string]string{},
		nodeTTL:   c.NodeTTL,
		split:     map[string][]netip.AddrPort{},
		upstreams: slices.Clone(c.Upstreams),
		tunnel:    slices.Clone(c.TunnelPrefixes),
	}
	if t.nodeTTL == 0 {
		t.nodeTTL = DefaultNodeTTL
	}
	domain := ""
	if c.Domain != "" {
		domain = canon(c.Domain)
	}
	for _, z := range append([]string{c.Domain}, c.Zones...) {
		if z == "" {
			continue
		}
		apex := canon(z)
		t.zones[apex] = soaFor(apex, serial)
		t.node(apex).rrs[mdns.TypeSOA] = []mdns.RR{t.zones[apex]}
	}
	for d, rs := range c.SplitDNS {
		t.split[canon(d)] = slices.Clone(rs)
	}

	// Node names and their reverse names.
	if domain != "" {
		for name, addrs := range c.Nodes {
			fqdn := name + "." + domain
			n := t.node(fqdn)
			for _, a := range addrs {
				rr := addrRR(fqdn, a, t.nodeTTL)
				n.rrs[rr.Header().Rrtype] = append(n.rrs[rr.Header().Rrtype], rr)
				if rev, err := mdns.ReverseAddr(a.Unmap().String()); err == nil {
					t.ptr[rev] = fqdn
				}
			}
		}
	}

	// Custom records: a type defined here replaces the node's records of
	// that type at the same name; a CNAME replaces all of them.
	custom := map[string]map[uint16]bool{}
	for _, r := range c.Records {
		owner := canon(r.Name)
		n := t.node(owner)
		if custom[owner] == nil {
			custom[owner] = map[uint16]bool{}
		}
		typ := mdns.StringToType[r.Type]
		if !custom[owner][typ] {
			custom[owner][typ] = true
			delete(n.rrs, typ)
		}
		ttl := r.TTL
		switch {
		case ttl == 0 && r.Node != "" && r.Type != TypeCNAME:
			ttl = t.nodeTTL // addresses that follow a node age like the node's
		case ttl == 0:
			ttl = DefaultTTL
		}
		hdr := mdns.RR_Header{Name: owner, Rrtype: typ, Class: mdns.ClassINET, Ttl: ttl}
		switch r.Type {
		case TypeCNAME:
			target := r.Data
			if r.Node != "" {
				target = r.Node + "." + domain // Validate: there is a domain
			}
			n.rrs = map[uint16][]mdns.RR{}
			n.cname = &mdns.CNAME{Hdr: hdr, Target: canon(target)}
		case TypeA, TypeAAAA:
			var addrs []netip.Addr
			if r.Node != "" {
				addrs = c.Nodes[r.Node]
			} else {
				addrs = []netip.Addr{netip.MustParseAddr(r.Data)} // validated
			}
			for _, a := range addrs {
				if a.Unmap().Is4() == (r.Type == TypeA) {
					n.rrs[typ] = append(n.rrs[typ], addrRR(owner, a, ttl))
				}
			}
			if len(n.rrs[typ]) == 0 {
				n.rrs[typ] = nil // defined but empty: NODATA
			}
		case TypeTXT:
			n.rrs[typ] = append(n.rrs[typ], &mdns.TXT{Hdr: hdr, Txt: txtStrings(r.Data)})
		case TypeSRV:
			f := strings.Fields(r.Data)
			n.rrs[typ] = append(n.rrs[typ], &mdns.SRV{Hdr: hdr, Priority: u16(f[0]), Weight: u16(f[1]), Port: u16(f[2]), Target: canon(f[3])})
		case TypeMX:
			f := strings.Fields(r.Data)
			n.rrs[typ] = append(n.rrs[typ], &mdns.MX{Hdr: hdr, Preference: u16(f[0]), Mx: canon(f[1])})
		}
	}
	// Empty non-terminals: every ancestor of a name, up to its apex.
	zones := t.zoneSet()
	for _, name := range sortedKeys(t.names) {
		apex := zoneOf(name, zones)
		for n := name; n != apex; {
			n = n[strings.IndexByte(n, '.')+1:]
			t.node(n)
		}
	}
	return t, nil
}

func (t *table) zoneSet() map[string]bool {
	m := make(map[string]bool, len(t.zones))
	for z := range t.zones {
		m[z] = true
	}
	return m
}

// node returns the node of a canonical name, creating it.
func (t *table) node(name string) *rrNode {
	n := t.names[name]
	if n == nil {
		n = &rrNode{rrs: map[uint16][]mdns.RR{}}
		t.names[name] = n
	}
	return n
}

// zoneFor returns the apex of the authoritative zone holding name, or "".
func (t *table) zoneFor(name string) string {
	for n := name; ; {
		if t.zones[n] != nil {
			return n
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return ""
		}
		n = n[i+1:]
	}
}

// splitFor returns the longest split-DNS domain holding name, or "".
func (t *table) splitFor(name string) string {
	for n := name; ; {
		if t.split[n] != nil {
			return n
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return ""
		}
		n = n[i+1:]
	}
}

// route says where a canonical name is answered: authoritatively (zone is
// the apex) or by forwarding (key names the route for the cache, servers
// are the resolvers; none means no route). The longest suffix wins.
func (t *table) route(name string) (zone, key string, servers []netip.AddrPort) {
	z, s := t.zoneFor(name), t.splitFor(name)
	if z != "" && len(z) >= len(s) {
		return z, "", nil
	}
	if s != "" {
		return "", s, t.split[s]
	}
	return "", ".", t.upstreams
}

func soaFor(apex string, serial uint32) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: apex, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: NegativeTTL},
		Ns:      "ns." + apex,
		Mbox:    "hostmaster." + apex,
		Serial:  serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  NegativeTTL,
	}
}

func addrRR(owner string, a netip.Addr, ttl uint32) mdns.RR {
	a = a.Unmap()
	if a.Is4() {
		return &mdns.A{Hdr: mdns.RR_Header{Name: owner, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: a.AsSlice()}
	}
	return &mdns.AAAA{Hdr: mdns.RR_Header{Name: owner, Rrtype: mdns.TypeAAAA, Class: mdns.ClassINET, Ttl: ttl}, AAAA: a.AsSlice()}
}

// txtStrings splits text into character-strings of at most 255 bytes,
// escaped the way miekg/dns packs them (a backslash is literal).
func txtStrings(s string) []string {
	var out []string
	for len(s) > 0 {
		n := min(len(s), 255)
		out = append(out, strings.ReplaceAll(s[:n], `\`, `\\`))
		s = s[n:]
	}
	return out
}

func u16(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}

// reverseZone returns the reverse-DNS apex of a prefix, rounded down to a
// label boundary (octets for IPv4, nibbles for IPv6).
func reverseZone(p netip.Prefix) string {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		labels := []string{}
		for i := range p.Bits() / 8 {
			labels = append([]string{strconv.Itoa(int(b[i]))}, labels...)
		}
		return strings.Join(append(labels, "in-addr.arpa."), ".")
	}
	b := a.As16()
	var sb strings.Builder
	for i := p.Bits()/4 - 1; i >= 0; i-- {
		nib := b[i/2] >> 4
		if i%2 == 1 {
			nib = b[i/2] & 0xf
		}
		sb.WriteString(strconv.FormatUint(uint64(nib), 16))
		sb.WriteByte('.')
	}
	return sb.String() + "ip6.arpa."
}

// reverseAddr parses a canonical reverse name back to an address.
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 4 {
			return netip.Addr{}, false
		}
		slices.Reverse(l)
		a, err := netip.ParseAddr(strings.Join(l, "."))
		return a, err == nil && a.Is4()
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		l := strings.Split(rest, ".")
		if len(l) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, s := range l {
			v, err := strconv.ParseUint(s, 16, 4)
			if err != nil || len(s) != 1 {
				return netip.Addr{}, false
			}
			j := 31 - i // l[0] is the last nibble
			if j%2 == 0 {
				b[j/2] |= byte(v) << 4
			} else {
				b[j/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
