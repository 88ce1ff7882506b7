package dns

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// bigConfig has names with n A records each: big60 (~1 KB answer) and
// big100 (~1.7 KB).
func bigConfig() Config {
	c := baseConfig()
	for i := 1; i <= 100; i++ {
		a := fmt.Sprintf("10.0.%d.%d", i/250, i%250)
		c.Records = append(c.Records, Record{Name: "big100.warren.internal", Type: "A", Data: a})
		if i <= 60 {
			c.Records = append(c.Records, Record{Name: "big60.warren.internal", Type: "A", Data: a})
		}
	}
	return c
}

func TestTruncation(t *testing.T) {
	_, addr := serve(t, bigConfig(), Options{}, nil)
	for _, tc := range []struct {
		name    string
		network string
		edns    uint16
		tc      bool
		max     int // reply size bound
	}{
		{"big60.warren.internal.", "udp", 0, true, 512},
		{"big60.warren.internal.", "udp", 1232, false, 1232},
		{"big60.warren.internal.", "udp", 300, true, 512}, // below 512 counts as 512
		{"big100.warren.internal.", "udp", 1232, true, 1232},
		{"big100.warren.internal.", "udp", 4096, true, 1232}, // capped at ours
		{"big100.warren.internal.", "tcp", 0, false, 65535},
	} {
		m := query(t, addr, tc.network, tc.name, mdns.TypeA, tc.edns)
		m.Compress = true // Len as sent
		if m.Truncated != tc.tc || m.Len() > tc.max {
			t.Fatalf("%s over %s, EDNS %d: TC %v, %d bytes, %d answers", tc.name, tc.network, tc.edns, m.Truncated, m.Len(), len(m.Answer))
		}
		if want := map[string]int{"big60.warren.internal.": 60, "big100.warren.internal.": 100}[tc.name]; !tc.tc && len(m.Answer) != want {
			t.Fatalf("%s: %d answers, want %d", tc.name, len(m.Answer), want)
		}
	}
}

func TestUpstreamTruncationTCPRetry(t *testing.T) {
	up := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated = true
		} else {
			for i := range 100 {
				m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf("%s 60 IN A 192.0.2.%d", r.Question[0].Name, i)))
			}
		}
		w.WriteMsg(m)
	})
	c := baseConfig()
	c.Upstreams = []netip.AddrPort{up.addr}
	_, addr := serve(t, c, Options{}, nil)
	m := query(t, addr, "tcp", "many.example.org.", mdns.TypeA, 0)
	if len(m.Answer) != 100 || m.Truncated {
		t.Fatalf("over TCP: %d answers, TC %v", len(m.Answer), m.Truncated)
	}
	if up.queries.Load() != 2 {
		t.Fatalf("upstream saw %d queries, want UDP then TCP", up.queries.Load())
	}
	m = query(t, addr, "udp", "many.example.org.", mdns.TypeA, 1232) // from the cache, truncated for UDP
	m.Compress = true
	if !m.Truncated || m.Len() > 1232 || up.queries.Load() != 2 {
		t.Fatalf("over UDP: TC %v, %d bytes, %d upstream queries", m.Truncated, m.Len(), up.queries.Load())
	}
}

func TestEDNS(t *testing.T) {
	_, addr := serve(t, baseConfig(), Options{}, nil)
	m := query(t, addr, "udp", "alpha.warren.internal.", mdns.TypeA, 4096)
	if opt := m.IsEdns0(); opt == nil || opt.UDPSize() != EDNSSize || opt.Version() != 0 {
		t.Fatalf("EDNS reply: %v", m)
	}
	if m = query(t, addr, "udp", "alpha.warren.internal.", mdns.TypeA, 0); m.IsEdns0() != nil {
		t.Fatalf("OPT in the reply to a query without one: %v", m)
	}
	// EDNS version 1: BADVERS, with our OPT.
	q := new(mdns.Msg)
	q.SetQuestion("alpha.warren.internal.", mdns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	resp, err := mdns.Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != mdns.RcodeBadVers || resp.IsEdns0() == nil || len(resp.Answer) != 0 {
		t.Fatalf("EDNS version 1: %v", resp)
	}
	// Two OPT records: FORMERR.
	q = new(mdns.Msg)
	q.SetQuestion("alpha.warren.internal.", mdns.TypeA)
	q.SetEdns0(1232, false)
	q.SetEdns0(1232, false)
	q.Extra = append(q.Extra, mdns.Copy(q.Extra[0]))
	if resp, err = mdns.Exchange(q, addr); err != nil || resp.Rcode != mdns.RcodeFormatError {
		t.Fatalf("two OPTs: %v %v", resp, err)
	}
}

func TestAllow(t *testing.T) {
	tunnel := netip.MustParsePrefix("100.64.0.0/10")
	_, addr := serve(t, baseConfig(), Options{}, tunnel.Contains)
	if m, err := tryQuery(addr, "udp", "alpha.warren.internal.", mdns.TypeA, 0, 300*time.Millisecond); err == nil {
		t.Fatalf("UDP query from outside the tunnel answered: %v", m)
	}
	if m, err := tryQuery(addr, "tcp", "alpha.warren.internal.", mdns.TypeA, 0, 300*time.Millisecond); err == nil {
		t.Fatalf("TCP query from outside the tunnel answered: %v", m)
	}
	// Malformed packets from outside get no FORMERR either.
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(make([]byte, 12)) // qdcount 0: FORMERR for an allowed source
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 512)); err == nil {
		t.Fatalf("got %d bytes back from a refused source", n)
	}
	// The default allows loopback only: the other tests rely on it.
	s := NewServer(nil, nil)
	if !s.allow(netip.MustParseAddr("127.0.0.1")) || !s.allow(netip.MustParseAddr("::1")) || s.allow(alpha4) {
		t.Fatal("default Allow is not loopback-only")
	}
}

func TestMalformedPackets(t *testing.T) {
	_, addr := serve(t, corpConfig(), Options{}, nil)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	valid, _ := new(mdns.Msg).SetQuestion("alpha.warren.internal.", mdns.TypeA).Pack()
	resp := valid[:]
	resp = append([]byte(nil), resp...)
	resp[2] |= 0x80 // QR: a response
	huge := make([]byte, 8000)
	copy(huge, valid)
	for _, p := range [][]byte{
		{}, {0}, make([]byte, 11), valid[:len(valid)-3], resp, huge,
		append(append([]byte(nil), valid[:12]...), 0xc0, 0x0c, 0, 1, 0, 1), // a compression pointer loop
		append(append([]byte(nil), valid...), 0xff, 0xff, 0xff),
	} {
		conn.Write(p)
	}
	// Garbage over TCP: a bad length, then a bad message.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff})
	tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	io.Copy(io.Discard, tc) // until the server closes it or the deadline
	tc.Close()
	// Still serving.
	if m := query(t, addr, "udp", "alpha.warren.internal.", mdns.TypeA, 0); len(m.Answer) != 1 {
		t.Fatalf("after garbage: %v", m)
	}
	// A TCP query answered with its length prefix.
	tc, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write(binary.BigEndian.AppendUint16(nil, uint16(len(valid))))
	tc.Write(valid)
	tc.SetReadDeadline(time.Now().Add(2 * time.Second))
	var l [2]byte
	if _, err := io.ReadFull(tc, l[:]); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(tc, b); err != nil {
		t.Fatal(err)
	}
	var m mdns.Msg
	if err := m.Unpack(b); err != nil || len(m.Answer) != 1 {
		t.Fatalf("TCP answer: %v %v", &m, err)
	}
}

func TestConcurrentQueriesAndUpdates(t *testing.T) {
	up := staticUpstream(t, "192.0.2.1", 30, 5)
	c := corpConfig()
	c.Upstreams = []netip.AddrPort{up.addr}
	r, addr := serve(t, c, Options{}, nil)
	moved := corpConfig()
	moved.Upstreams = c.Upstreams
	moved.Nodes["alpha"] = []netip.Addr{netip.MustParseAddr("100.64.0.77")}

	stop := make(chan struct{})
	var updates sync.WaitGroup
	updates.Add(1)
	go func() {
		defer updates.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cfg := c
			if i%2 == 1 {
				cfg = moved
			}
			if err := r.SetConfig(cfg); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network := []string{"udp", "tcp"}[g%2]
			for i := range 40 {
				name := []string{"pg.corp.example.com.", "www.example.org.", "foo.apps.corp.example.com."}[i%3]
				m, err := tryQuery(addr, network, name, mdns.TypeA, 1232, 3*time.Second)
				if err != nil {
					errs <- err
					return
				}
				got := addrs(m)
				if len(got) != 1 || (got[0] != "100.64.0.1" && got[0] != "100.64.0.77" && got[0] != "192.0.2.1" && got[0] != "10.0.0.7") {
					errs <- fmt.Errorf("%s: %v", name, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	updates.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
