package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func mustReverse(t testing.TB, a netip.Addr) string {
	t.Helper()
	s, err := mdns.ReverseAddr(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzHandleRaw feeds arbitrary bytes as a query through the server's
// unpack/answer/pack path (no upstreams: nothing leaves the process) and
// checks that a reply, when there is one, is a well-formed response to it
// within the size the transport allows.
func FuzzHandleRaw(f *testing.F) {
	c := corpConfig()
	for k, v := range bigConfig().Records {
		if k < 80 {
			c.Records = append(c.Records, v)
		}
	}
	r, err := NewResolver(c, Options{})
	if err != nil {
		f.Fatal(err)
	}
	s := NewServer(r, nil)
	for _, q := range []struct {
		name string
		typ  uint16
		edns uint16
	}{
		{"alpha.warren.internal.", mdns.TypeA, 0},
		{"pg.corp.example.com.", mdns.TypeA, 1232},
		{"x.apps.corp.example.com.", mdns.TypeANY, 4096},
		{"big100.warren.internal.", mdns.TypeA, 0},
		{"1.0.64.100.in-addr.arpa.", mdns.TypePTR, 512},
		{"example.org.", mdns.TypeA, 0},
	} {
		m := new(mdns.Msg).SetQuestion(q.name, q.typ)
		if q.edns > 0 {
			m.SetEdns0(q.edns, true)
		}
		b, _ := m.Pack()
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{}, false)
	f.Add(make([]byte, 12), false)
	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		out := s.handleRaw(ctx, raw, tcp)
		if out == nil {
			return
		}
		limit := EDNSSize
		if tcp {
			limit = mdns.MaxMsgSize
		}
		if len(out) > limit {
			t.Fatalf("reply of %d bytes over %d", len(out), limit)
		}
		var req, resp mdns.Msg
		if err := req.Unpack(raw); err != nil {
			t.Fatalf("answered an unparseable query: %v", err)
		}
		if err := resp.Unpack(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if !resp.Response || resp.Id != req.Id {
			t.Fatalf("reply is not a response to the query: %v", &resp)
		}
		if req.IsEdns0() == nil && !tcp && len(out) > mdns.MinMsgSize {
			t.Fatalf("reply of %d bytes to a query without EDNS", len(out))
		}
	})
}

// FuzzUpstreamReply has a loopback upstream answer with arbitrary bytes
// (the query's ID patched in) and checks the forwarder and cache survive
// them and the server still answers.
func FuzzUpstreamReply(f *testing.F) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer pc.Close()
	replies := make(chan []byte)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 2 {
				continue
			}
			reply := <-replies
			if len(reply) >= 2 {
				reply = append([]byte(nil), reply...)
				copy(reply, buf[:2])
			}
			pc.WriteTo(reply, from)
		}
	}()
	c := baseConfig()
	c.Upstreams = []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	r, err := NewResolver(c, Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	good := new(mdns.Msg).SetQuestion("www.example.org.", mdns.TypeA)
	good.Response = true
	good.Answer = []mdns.RR{mustRR(f, "www.example.org. 60 IN A 192.0.2.1")}
	b, _ := good.Pack()
	f.Add(b)
	good.Answer = nil
	good.Rcode = mdns.RcodeNameError
	good.Ns = []mdns.RR{mustRR(f, "example.org. 60 IN SOA a. b. 1 2 3 4 5")}
	b, _ = good.Pack()
	f.Add(b)
	f.Add([]byte{0, 0, 0x80})
	f.Fuzz(func(t *testing.T, reply []byte) {
		r.fwd.cache.flush()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		done := make(chan *mdns.Msg)
		go func() {
			done <- r.Resolve(ctx, mdns.Question{Name: "www.example.org.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
		}()
		select {
		case replies <- reply:
		case <-done:
			t.Fatal("resolved without asking the upstream")
		}
		m := <-done
		if _, err := m.Pack(); err != nil && len(m.Answer)+len(m.Ns)+len(m.Extra) > 0 {
			// Upstream records that miekg/dns parsed must pack again.
			t.Fatalf("answer does not pack: %v", err)
		}
	})
}
