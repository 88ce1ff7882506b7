package dns

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// fakeClock is an injectable clock for cache expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	alpha4 = netip.MustParseAddr("100.64.0.1")
	alpha6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	beta4  = netip.MustParseAddr("100.64.0.2")
	beta6  = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

// baseConfig is a tailnet of two nodes.
func baseConfig() Config {
	return Config{
		Domain: "warren.internal",
		Nodes: map[string][]netip.Addr{
			"alpha": {alpha4, alpha6},
			"beta":  {beta4, beta6},
		},
	}
}

// serve starts a resolver and a server for c on 127.0.0.1 and returns
// the address to query.
func serve(t *testing.T, c Config, o Options, allow func(netip.Addr) bool) (*Resolver, string) {
	t.Helper()
	r, err := NewResolver(c, o)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(r, allow)
	ap, err := s.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return r, ap.String()
}

// upstream is a test resolver (a miekg/dns server on loopback, UDP and
// TCP on one port) answering with handler; it counts the queries it gets.
type upstream struct {
	addr    netip.AddrPort
	queries atomic.Int64
}

func startUpstream(t *testing.T, handler func(w mdns.ResponseWriter, r *mdns.Msg)) *upstream {
	t.Helper()
	u := &upstream{}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.queries.Add(1)
		handler(w, r)
	})
	for range 10 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue
		}
		u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
		for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			go srv.ActivateAndServe()
			<-started
			t.Cleanup(func() { srv.Shutdown() })
		}
		return u
	}
	t.Fatal("no free port for the upstream")
	return nil
}

// staticUpstream answers every A query with ip at ttl, NXDOMAIN (with an
// SOA of minimum negTTL) for names starting with "nx".
func staticUpstream(t *testing.T, ip string, ttl, negTTL uint32) *upstream {
	return startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case len(q.Name) > 2 && q.Name[:2] == "nx":
			m.Rcode = mdns.RcodeNameError
			m.Ns = []mdns.RR{mustRR(t, "example. 3600 IN SOA ns.example. h.example. 1 2 3 4 "+itoa(negTTL))}
		case q.Qtype == mdns.TypeA:
			m.Answer = []mdns.RR{mustRR(t, q.Name+" "+itoa(ttl)+" IN A "+ip)}
		}
		w.WriteMsg(m)
	})
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func mustRR(t testing.TB, s string) mdns.RR {
	t.Helper()
	rr, err := mdns.NewRR(s)
	if err != nil {
		t.Fatalf("NewRR(%q): %v", s, err)
	}
	return rr
}

// query asks addr over network ("udp" or "tcp"); edns > 0 adds an OPT
// record advertising that size.
func query(t *testing.T, addr, network, name string, qtype uint16, edns uint16) *mdns.Msg {
	t.Helper()
	m, err := tryQuery(addr, network, name, qtype, edns, 3*time.Second)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, mdns.TypeToString[qtype], network, err)
	}
	return m
}

func tryQuery(addr, network, name string, qtype uint16, edns uint16, timeout time.Duration) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &mdns.Client{Net: network, Timeout: timeout, UDPSize: 65535}
	resp, _, err := c.Exchange(m, addr)
	return resp, err
}

// addrs returns the A/AAAA addresses in an answer section.
func addrs(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *mdns.A:
			out = append(out, v.A.String())
		case *mdns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}

func hasSOA(m *mdns.Msg, apex string) bool {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*mdns.SOA); ok && soa.Hdr.Name == apex {
			return true
		}
	}
	return false
}
