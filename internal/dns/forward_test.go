package dns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func TestSplitDNS(t *testing.T) {
	up := staticUpstream(t, "192.0.2.1", 300, 60)
	split := staticUpstream(t, "198.51.100.1", 300, 60)
	legacy := staticUpstream(t, "203.0.113.1", 300, 60)
	c := corpConfig()
	c.Upstreams = []netip.AddrPort{up.addr}
	c.SplitDNS = map[string][]netip.AddrPort{
		"int.example.net":         {split.addr},
		"legacy.corp.example.com": {legacy.addr}, // below an authoritative zone: longest suffix wins
	}
	c.Records = append(c.Records, Record{Name: "ext.corp.example.com", Type: "CNAME", Data: "www.example.org"})
	_, addr := serve(t, c, Options{}, nil)

	for name, want := range map[string]string{
		"www.example.org.":            "192.0.2.1",
		"host.int.example.net.":       "198.51.100.1",
		"int.example.net.":            "198.51.100.1",
		"x.legacy.corp.example.com.":  "203.0.113.1",
		"www.corp.example.com.":       "10.0.0.80",
		"notint.example.net.":         "192.0.2.1",
		"a.b.c.int.example.net.":      "198.51.100.1",
		"alpha.warren.internal.":      "100.64.0.1",
		"something.warren.internal.x": "192.0.2.1",
	} {
		m := query(t, addr, "udp", mdns.Fqdn(name), mdns.TypeA, 0)
		if !slices.Equal(addrs(m), []string{want}) || !m.RecursionAvailable {
			t.Fatalf("%s: want %s, got %v", name, want, m)
		}
		if forwarded := want[:3] != "10." && want[:4] != "100."; m.Authoritative == forwarded {
			t.Errorf("%s: AA %v for a forwarded=%v answer", name, m.Authoritative, forwarded)
		}
	}
	if n := up.queries.Load(); n != 3 {
		t.Errorf("default upstream got %d queries, want 3", n)
	}
	// A CNAME leaving our zones is completed by forwarding its target.
	m := query(t, addr, "udp", "ext.corp.example.com.", mdns.TypeA, 0)
	if len(m.Answer) != 2 || m.Answer[0].Header().Rrtype != mdns.TypeCNAME || !slices.Equal(addrs(m), []string{"192.0.2.1"}) || !m.Authoritative {
		t.Fatalf("CNAME out of our zones: %v", m)
	}
}

func TestForwardCache(t *testing.T) {
	clock := newClock()
	up := staticUpstream(t, "192.0.2.1", 30, 5)
	c := baseConfig()
	c.Upstreams = []netip.AddrPort{up.addr}
	r, addr := serve(t, c, Options{Now: clock.Now}, nil)

	ttl := func(m *mdns.Msg) uint32 { return m.Answer[0].Header().Ttl }
	m := query(t, addr, "udp", "www.example.org.", mdns.TypeA, 0)
	if ttl(m) != 30 || up.queries.Load() != 1 {
		t.Fatalf("first answer: %v (%d upstream queries)", m, up.queries.Load())
	}
	clock.Advance(10 * time.Second)
	m = query(t, addr, "tcp", "WWW.Example.org.", mdns.TypeA, 0) // case-insensitive, any transport
	if ttl(m) != 20 || up.queries.Load() != 1 {
		t.Fatalf("cached answer after 10 s: TTL %d, %d upstream queries", ttl(m), up.queries.Load())
	}
	// Another type is another entry.
	query(t, addr, "udp", "www.example.org.", mdns.TypeAAAA, 0)
	if up.queries.Load() != 2 {
		t.Fatalf("AAAA served from the A entry")
	}
	clock.Advance(20 * time.Second)
	m = query(t, addr, "udp", "www.example.org.", mdns.TypeA, 0)
	if ttl(m) != 30 || up.queries.Load() != 3 {
		t.Fatalf("after expiry: TTL %d, %d upstream queries", ttl(m), up.queries.Load())
	}

	// Negative caching for min(SOA TTL, SOA MINIMUM) = 5 s.
	n0 := up.queries.Load()
	m = query(t, addr, "udp", "nxhost.example.org.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeNameError || len(m.Ns) != 1 {
		t.Fatalf("NXDOMAIN: %v", m)
	}
	clock.Advance(3 * time.Second)
	m = query(t, addr, "udp", "nxhost.example.org.", mdns.TypeA, 0)
	if m.Rcode != mdns.RcodeNameError || up.queries.Load() != n0+1 || m.Ns[0].Header().Ttl != 2 {
		t.Fatalf("cached NXDOMAIN: %v (%d upstream queries)", m, up.queries.Load()-n0)
	}
	clock.Advance(2 * time.Second)
	query(t, addr, "udp", "nxhost.example.org.", mdns.TypeA, 0)
	if up.queries.Load() != n0+2 {
		t.Fatalf("NXDOMAIN not expired after its negative TTL")
	}
	// NODATA (AAAA) without an SOA is not cached.
	n0 = up.queries.Load()
	query(t, addr, "udp", "nosoa.example.org.", mdns.TypeMX, 0)
	query(t, addr, "udp", "nosoa.example.org.", mdns.TypeMX, 0)
	if up.queries.Load() != n0+2 {
		t.Fatalf("NODATA without SOA cached")
	}

	// New upstreams flush the cache.
	other := staticUpstream(t, "192.0.2.99", 30, 5)
	c.Upstreams = []netip.AddrPort{other.addr}
	if err := r.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	if m = query(t, addr, "udp", "www.example.org.", mdns.TypeA, 0); !slices.Equal(addrs(m), []string{"192.0.2.99"}) {
		t.Fatalf("after an upstream change: %v", m)
	}
}

func TestCacheBounds(t *testing.T) {
	now := time.Now()
	c := newCache(2, 1<<20)
	msg := func(name string) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		m.Answer = []mdns.RR{mustRR(t, name+" 60 IN A 192.0.2.1")}
		return m
	}
	for _, n := range []string{"a.", "b.", "c."} {
		c.put(cacheKey{name: n, qtype: mdns.TypeA}, msg(n), now)
	}
	if c.len() != 2 || c.get(cacheKey{name: "a.", qtype: mdns.TypeA}, now) != nil || c.get(cacheKey{name: "c.", qtype: mdns.TypeA}, now) == nil {
		t.Fatalf("LRU: %d entries", c.len())
	}
	small := newCache(100, msg("a.").Len()*2+1)
	for _, n := range []string{"a.", "b.", "c."} {
		small.put(cacheKey{name: n, qtype: mdns.TypeA}, msg(n), now)
	}
	if small.len() != 2 {
		t.Fatalf("byte bound: %d entries", small.len())
	}
	// A SERVFAIL or a zero TTL is not cached.
	m := msg("d.")
	m.Answer[0].Header().Ttl = 0
	c.put(cacheKey{name: "d."}, m, now)
	m = msg("e.")
	m.Rcode = mdns.RcodeServerFailure
	c.put(cacheKey{name: "e."}, m, now)
	if c.get(cacheKey{name: "d."}, now) != nil || c.get(cacheKey{name: "e."}, now) != nil {
		t.Fatal("cached a zero TTL or a SERVFAIL")
	}
}

func TestUpstreamFailover(t *testing.T) {
	failing := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	silent := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {})
	// A closed port: the kernel refuses at once.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	good := staticUpstream(t, "192.0.2.1", 30, 5)

	c := baseConfig()
	c.Upstreams = []netip.AddrPort{failing.addr, dead, silent.addr, good.addr}
	// Per resolver attempt: long enough for the good resolver to answer on
	// a loaded machine, well below the 2 s default (which the bound on the
	// failover's duration below tells apart).
	_, addr := serve(t, c, Options{Timeout: 800 * time.Millisecond}, nil)
	start := time.Now()
	m := query(t, addr, "udp", "www.example.org.", mdns.TypeA, 0)
	took := time.Since(start)
	if !slices.Equal(addrs(m), []string{"192.0.2.1"}) {
		t.Fatalf("failover: %v", m)
	}
	// The silent resolver's server counts a query in its own goroutine,
	// which nothing waits for (it never answers): it may lag.
	for deadline := time.Now().Add(5 * time.Second); silent.queries.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if failing.queries.Load() != 1 || silent.queries.Load() != 1 || good.queries.Load() != 1 {
		t.Fatalf("queries: failing %d, silent %d, good %d", failing.queries.Load(), silent.queries.Load(), good.queries.Load())
	}
	if took > 2*time.Second {
		t.Errorf("failover took %v", took)
	}

	// Only failing resolvers: their SERVFAIL is passed on.
	c.Upstreams = []netip.AddrPort{failing.addr}
	_, addr = serve(t, c, Options{Timeout: 300 * time.Millisecond}, nil)
	if m = query(t, addr, "udp", "www.example.org.", mdns.TypeA, 0); m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("all failing: %v", m)
	}
}

// TestForwardThroughDial: with Options.Dial, queries to upstreams go over
// the connections it opens (UDP, then TCP for a truncated answer), as the
// userspace daemon's go through its netstack.
func TestForwardThroughDial(t *testing.T) {
	up := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
			m.Truncated = true
		} else {
			m.Answer = []mdns.RR{mustRR(t, r.Question[0].Name+" 60 IN A 192.0.2.7")}
		}
		w.WriteMsg(m)
	})
	var mu sync.Mutex
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, network+" "+addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	c := baseConfig()
	c.Upstreams = []netip.AddrPort{up.addr}
	r, err := NewResolver(c, Options{Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	m := r.Resolve(context.Background(), mdns.Question{Name: "www.example.org.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
	if m == nil || len(m.Answer) != 1 || m.Answer[0].(*mdns.A).A.String() != "192.0.2.7" {
		t.Fatalf("answer %v", m)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"udp " + up.addr.String(), "tcp " + up.addr.String()}; !slices.Equal(dialed, want) {
		t.Fatalf("dialed %v, want %v", dialed, want)
	}
}
