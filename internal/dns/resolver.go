package dns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// maxChain bounds the CNAME hops followed for one query.
const maxChain = 8

// Options tune a Resolver. The zero value is valid.
type Options struct {
	Now          func() time.Time // clock for the cache; default time.Now
	Timeout      time.Duration    // per upstream attempt; default 2 s
	CacheEntries int              // default DefaultCacheEntries; negative: no cache
	CacheBytes   int              // default DefaultCacheBytes
	// Dial, if set, opens the connections to upstream resolvers
	// (network "udp" or "tcp"), e.g. through a userspace network stack
	// for resolvers on the mesh; nil: the host's sockets.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Resolver answers questions from its current Config: authoritatively for
// node names, reverse names of node addresses and custom records, by
// forwarding (through a cache) for the rest. SetConfig swaps the Config
// atomically; a query in flight finishes on the snapshot it started with.
// It is safe for concurrent use.
type Resolver struct {
	tab    atomic.Pointer[table]
	mu     sync.Mutex // serializes SetConfig
	serial uint32
	fwd    *forwarder
}

// NewResolver returns a resolver for c (validated).
func NewResolver(c Config, o Options) (*Resolver, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.CacheEntries == 0 {
		o.CacheEntries = DefaultCacheEntries
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	r := &Resolver{fwd: &forwarder{timeout: o.Timeout, now: o.Now, dial: o.Dial}}
	if o.CacheEntries > 0 {
		r.fwd.cache = newCache(o.CacheEntries, o.CacheBytes)
	}
	if err := r.SetConfig(c); err != nil {
		return nil, err
	}
	return r, nil
}

// SetConfig validates c and makes it current; on error the old one stays.
// The forwarding cache is flushed when the upstreams or split DNS change.
func (r *Resolver) SetConfig(c Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, err := compile(c, r.serial+1)
	if err != nil {
		return err
	}
	r.serial++
	old := r.tab.Swap(t)
	if old != nil && r.fwd.cache != nil && !sameRoutes(old, t) {
		r.fwd.cache.flush()
	}
	return nil
}

// Config returns the current configuration (shared: do not modify).
func (r *Resolver) Config() Config { return r.tab.Load().cfg }

func sameRoutes(a, b *table) bool {
	if !slices.Equal(a.upstreams, b.upstreams) || len(a.split) != len(b.split) {
		return false
	}
	for d, rs := range a.split {
		if !slices.Equal(rs, b.split[d]) {
			return false
		}
	}
	return true
}

// Resolve answers one question. The result carries Rcode, Authoritative
// and the three sections; the caller builds the reply around it.
func (r *Resolver) Resolve(ctx context.Context, q mdns.Question) *mdns.Msg {
	t := r.tab.Load()
	out := new(mdns.Msg)
	switch {
	case q.Qclass != mdns.ClassINET:
		out.Rcode = mdns.RcodeRefused
		return out
	case q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR || q.Qtype == mdns.TypeOPT:
		out.Rcode = mdns.RcodeRefused
		return out
	}
	name := canon(q.Name)
	if strings.HasSuffix(name, ".arpa.") && t.reverse(out, q, name) {
		return out
	}
	owner := q.Name // the first owner keeps the client's spelling
	seen := map[string]bool{}
	for hop := 0; ; hop++ {
		zone, key, servers := t.route(name)
		if zone == "" {
			up, err := r.fwd.forward(ctx, mdns.Question{Name: owner, Qtype: q.Qtype, Qclass: q.Qclass}, key, servers)
			if err != nil {
				out.Rcode = mdns.RcodeServerFailure
				return out
			}
			out.Rcode = up.Rcode
			out.Answer = append(out.Answer, up.Answer...)
			out.Ns, out.Extra = up.Ns, up.Extra
			return out
		}
		if hop == 0 {
			out.Authoritative = true
		}
		n := t.find(name, zone)
		if n == nil {
			out.Rcode = mdns.RcodeNameError
			out.Ns = []mdns.RR{negSOA(t.zones[zone])}
			return out
		}
		if n.cname != nil && q.Qtype != mdns.TypeCNAME {
			out.Answer = append(out.Answer, withOwner(n.cname, owner))
			seen[name] = true
			name = n.cname.Target
			owner = name
			if seen[name] || hop+1 >= maxChain {
				out.Rcode = mdns.RcodeServerFailure // CNAME loop or chain too long
				return out
			}
			continue
		}
		var rrs []mdns.RR
		switch {
		case n.cname != nil: // CNAME query at a CNAME
			rrs = []mdns.RR{n.cname}
		case q.Qtype == mdns.TypeANY:
			for _, typ := range sortedTypes(n.rrs) {
				rrs = append(rrs, n.rrs[typ]...)
			}
		default:
			rrs = n.rrs[q.Qtype]
		}
		if len(rrs) == 0 {
			out.Ns = []mdns.RR{negSOA(t.zones[zone])}
			return out
		}
		for _, rr := range rrs {
			out.Answer = append(out.Answer, withOwner(rr, owner))
		}
		out.Extra = t.glue(rrs)
		return out
	}
}

// find returns the node for a canonical name in zone apex, synthesizing
// from a wildcard when the name does not exist (RFC 4592: the source is
// "*." + the closest encloser); nil means NXDOMAIN.
func (t *table) find(name, apex string) *rrNode {
	if n := t.names[name]; n != nil {
		return n
	}
	ce := name
	for ce != apex {
		ce = ce[strings.IndexByte(ce, '.')+1:]
		if t.names[ce] != nil {
			break
		}
	}
	return t.names["*."+ce]
}

// reverse answers a reverse (PTR) name when it is ours: a node address, or
// an address in a tunnel prefix (NXDOMAIN). It reports whether it did.
func (t *table) reverse(out *mdns.Msg, q mdns.Question, name string) bool {
	target, isNode := t.ptr[name]
	a, ok := reverseAddr(name)
	if !isNode && (!ok || !t.inTunnel(a)) {
		return false
	}
	out.Authoritative = true
	soa := soaFor(t.reverseApex(a, name), 1)
	if !isNode {
		out.Rcode = mdns.RcodeNameError
		out.Ns = []mdns.RR{soa}
		return true
	}
	if q.Qtype != mdns.TypePTR && q.Qtype != mdns.TypeANY {
		out.Ns = []mdns.RR{soa}
		return true
	}
	out.Answer = []mdns.RR{&mdns.PTR{
		Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: t.nodeTTL},
		Ptr: target,
	}}
	return true
}

func (t *table) inTunnel(a netip.Addr) bool {
	for _, p := range t.tunnel {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reverseApex names the reverse zone for negative answers about a: its
// tunnel prefix's, else the IPv4 /8 or IPv6 /48 around it.
func (t *table) reverseApex(a netip.Addr, name string) string {
	if !a.IsValid() {
		return name
	}
	for _, p := range t.tunnel {
		if p.Contains(a) {
			return reverseZone(p)
		}
	}
	bits := 48
	if a.Is4() {
		bits = 8
	}
	return reverseZone(netip.PrefixFrom(a, bits))
}

// glue returns the addresses we hold for SRV and MX targets.
func (t *table) glue(rrs []mdns.RR) []mdns.RR {
	var extra []mdns.RR
	for _, rr := range rrs {
		var target string
		switch v := rr.(type) {
		case *mdns.SRV:
			target = v.Target
		case *mdns.MX:
			target = v.Mx
		default:
			continue
		}
		if n := t.names[target]; n != nil {
			for _, a := range n.rrs[mdns.TypeA] {
				extra = append(extra, mdns.Copy(a))
			}
			for _, a := range n.rrs[mdns.TypeAAAA] {
				extra = append(extra, mdns.Copy(a))
			}
		}
	}
	return extra
}

// negSOA is the SOA for a negative answer, its TTL the negative TTL.
func negSOA(soa *mdns.SOA) mdns.RR { return mdns.Copy(soa) }

func withOwner(rr mdns.RR, owner string) mdns.RR {
	c := mdns.Copy(rr)
	c.Header().Name = owner
	return c
}

func sortedTypes(m map[uint16][]mdns.RR) []uint16 {
	ts := make([]uint16, 0, len(m))
	for t := range m {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}
