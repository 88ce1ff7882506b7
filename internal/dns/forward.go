package dns

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// EDNSSize is the UDP payload size advertised to clients and upstreams
// (DNS flag day 2020: no IP fragmentation).
const EDNSSize = 1232

// Cache bounds by default.
const (
	DefaultCacheEntries = 4096
	DefaultCacheBytes   = 4 << 20
	maxCachedMsg        = 16 << 10 // larger answers are forwarded, not cached
)

// errNoUpstream is returned when a query has nowhere to go.
var errNoUpstream = errors.New("dns: no resolver for this name")

// forwarder sends queries to resolvers in order, UDP first and TCP when
// the answer is truncated, and caches the answers.
type forwarder struct {
	timeout time.Duration // per resolver attempt
	cache   *cache        // nil: no caching
	now     func() time.Time
	dial    func(ctx context.Context, network, addr string) (net.Conn, error) // nil: the host's
}

// forward resolves q through servers; key identifies the route (cache
// entries of different routes are kept apart).
func (f *forwarder) forward(ctx context.Context, q mdns.Question, key string, servers []netip.AddrPort) (*mdns.Msg, error) {
	if len(servers) == 0 {
		return nil, errNoUpstream
	}
	ck := cacheKey{route: key, name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass}
	if f.cache != nil {
		if m := f.cache.get(ck, f.now()); m != nil {
			return m, nil
		}
	}
	req := new(mdns.Msg)
	req.SetQuestion(q.Name, q.Qtype)
	req.Question[0].Qclass = q.Qclass
	req.SetEdns0(EDNSSize, false)

	var fallback *mdns.Msg
	err := errNoUpstream
	for _, s := range servers {
		if ctx.Err() != nil {
			break
		}
		resp, e := f.exchange(ctx, req, s)
		if e != nil {
			err = e
			continue
		}
		if resp.Rcode != mdns.RcodeSuccess && resp.Rcode != mdns.RcodeNameError {
			// SERVFAIL, REFUSED, ...: another resolver may do better.
			if fallback == nil {
				fallback = resp
			}
			continue
		}
		stripOPT(resp)
		if f.cache != nil {
			f.cache.put(ck, resp, f.now())
		}
		return resp, nil
	}
	if fallback != nil {
		stripOPT(fallback)
		return fallback, nil
	}
	return nil, err
}

// exchange asks one resolver: UDP, then TCP if the answer is truncated.
func (f *forwarder) exchange(ctx context.Context, req *mdns.Msg, s netip.AddrPort) (*mdns.Msg, error) {
	req = req.Copy()
	req.Id = mdns.Id()
	c := &mdns.Client{Net: "udp", Timeout: f.timeout, UDPSize: EDNSSize}
	resp, err := f.ask(ctx, c, req, s)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, err = f.ask(ctx, c, req, s)
	}
	if err != nil {
		return nil, fmt.Errorf("dns: upstream %s: %w", s, err)
	}
	if !resp.Response || len(resp.Question) != 1 || resp.Question[0].Qtype != req.Question[0].Qtype ||
		resp.Question[0].Qclass != req.Question[0].Qclass || !strings.EqualFold(resp.Question[0].Name, req.Question[0].Name) {
		return nil, fmt.Errorf("dns: upstream %s: answer does not match the question", s)
	}
	if resp.Truncated {
		return nil, fmt.Errorf("dns: upstream %s: truncated over TCP", s)
	}
	return resp, nil
}

// ask sends req to s over c.Net, on a connection from f.dial if set.
func (f *forwarder) ask(ctx context.Context, c *mdns.Client, req *mdns.Msg, s netip.AddrPort) (*mdns.Msg, error) {
	if f.dial == nil {
		resp, _, err := c.ExchangeContext(ctx, req, s.String())
		return resp, err
	}
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, err := f.dial(dctx, c.Net, s.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, _, err := c.ExchangeWithConnContext(ctx, req, &mdns.Conn{Conn: conn, UDPSize: EDNSSize})
	return resp, err
}

func stripOPT(m *mdns.Msg) {
	out := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			out = append(out, rr)
		}
	}
	m.Extra = out
}

// --- cache ---

type cacheKey struct {
	route, name   string
	qtype, qclass uint16
}

type cacheEntry struct {
	key     cacheKey
	msg     *mdns.Msg
	stored  time.Time
	expires time.Time
	size    int
}

// cache is an LRU of upstream answers bounded in entries and bytes. An
// entry lives for the smallest TTL of its records; a negative answer
// (NXDOMAIN or NODATA) for its SOA's min(TTL, MINIMUM) (RFC 2308), and not
// at all without an SOA. Hits have their TTLs counted down.
type cache struct {
	mu         sync.Mutex
	maxEntries int
	maxBytes   int
	bytes      int
	ll         *list.List // front: most recently used
	m          map[cacheKey]*list.Element
}

func newCache(entries, bytes int) *cache {
	return &cache{maxEntries: entries, maxBytes: bytes, ll: list.New(), m: map[cacheKey]*list.Element{}}
}

// cacheTTL returns how long m may be cached, in seconds (0: not at all).
func cacheTTL(m *mdns.Msg) uint32 {
	if m.Truncated || (m.Rcode != mdns.RcodeSuccess && m.Rcode != mdns.RcodeNameError) {
		return 0
	}
	if m.Rcode == mdns.RcodeNameError || len(m.Answer) == 0 {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				return min(soa.Hdr.Ttl, soa.Minttl, MaxTTL)
			}
		}
		return 0
	}
	ttl := uint32(MaxTTL)
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != mdns.TypeOPT {
				ttl = min(ttl, rr.Header().Ttl)
			}
		}
	}
	return ttl
}

func (c *cache) put(k cacheKey, m *mdns.Msg, now time.Time) {
	ttl := cacheTTL(m)
	if ttl == 0 || c.maxEntries <= 0 {
		return
	}
	size := m.Len()
	if size > maxCachedMsg {
		return
	}
	m = m.Copy()
	if m.Rcode == mdns.RcodeNameError || len(m.Answer) == 0 {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				soa.Hdr.Ttl = ttl // RFC 2308 §5: the SOA's TTL is the negative TTL
			}
		}
	}
	e := &cacheEntry{key: k, msg: m, stored: now, expires: now.Add(time.Duration(ttl) * time.Second), size: size}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[k]; ok {
		c.remove(old)
	}
	c.m[k] = c.ll.PushFront(e)
	c.bytes += size
	for c.ll.Len() > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.ll.Back())
	}
}

func (c *cache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.m, e.key)
	c.bytes -= e.size
}

// get returns a copy of a live entry with its TTLs reduced by its age.
func (c *cache) get(k cacheKey, now time.Time) *mdns.Msg {
	c.mu.Lock()
	el, ok := c.m[k]
	if !ok {
		c.mu.Unlock()
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		c.mu.Unlock()
		return nil
	}
	c.ll.MoveToFront(el)
	c.mu.Unlock()
	m := e.msg.Copy()
	age := uint32(max(now.Sub(e.stored), 0) / time.Second)
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			h.Ttl -= min(h.Ttl, age)
		}
	}
	return m
}

// flush empties the cache.
func (c *cache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.m)
	c.bytes = 0
}

// len returns the number of entries.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
