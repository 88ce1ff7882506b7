package netsim_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netsim"
)

// keepingNAT is a Linux router doing masquerade without input filtering.
var keepingNAT = netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressPortDependent, KeepsUnsolicited: true}

// TestKeptUnsolicitedFlowDivertsThePort: a datagram from s1 to the NAT's
// public port before the inside host has sent to s1 is kept as a flow to
// the NAT; the host's own flow to s1 then leaves from another port (and
// works on it), its flow to s2 keeps the preserved port; once the kept
// flow has been quiet for UnsolicitedTimeout, a new flow to s1 gets the
// preserved port again.
func TestKeptUnsolicitedFlowDivertsThePort(t *testing.T) {
	l := newLab(t, keepingNAT)
	port := l.inside.LocalAddr().Port()
	s1 := l.s1.LocalAddr().Port()
	l.send(l.s1, netip.AddrPortFrom(natIP, port), "unsolicited")
	if l.nat.Kept.Load() != 1 || l.got(l.inside, "unsolicited").IsValid() {
		t.Fatalf("kept %d, want the unsolicited datagram kept and not delivered", l.nat.Kept.Load())
	}
	a := l.out(l.s1, s1, "to s1")
	if a.Port() == port || l.nat.Diverted.Load() != 1 {
		t.Fatalf("public source %v to s1 (diverted %d): want another port than the kept flow's %d", a, l.nat.Diverted.Load(), port)
	}
	if b := l.out(l.s2, l.s2.LocalAddr().Port(), "to s2"); b.Port() != port {
		t.Fatalf("public source %v to s2, want the preserved port %d", b, port)
	}
	l.send(l.s1, a, "reply")
	if from := l.got(l.inside, "reply"); from.Port() != s1 {
		t.Fatalf("s1's reply to the diverted port: got from %v", from)
	}
	if c := l.out(l.s1, s1, "to s1 again"); c != a {
		t.Fatalf("public source %v, want the diverted flow's %v", c, a)
	}

	// A NAT that forgets: the diverted flow and the kept one expire.
	l2 := newLab(t, netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressPortDependent,
		KeepsUnsolicited: true, Timeout: 10 * time.Second})
	l2.send(l2.s1, netip.AddrPortFrom(natIP, port), "unsolicited")
	if a := l2.out(l2.s1, s1, "to s1"); a.Port() == port {
		t.Fatalf("public source %v: want a diverted port", a)
	}
	l2.clk.Advance(netsim.UnsolicitedTimeout)
	if a := l2.out(l2.s1, s1, "to s1 later"); a.Port() != port {
		t.Fatalf("public source %v after the kept flow expired, want the preserved port %d", a, port)
	}
}

// TestTTLOpensOwnNATOnly: between two NATs with a router each towards
// the core, a datagram with a time to live of 2 passes its own NAT (which
// then lets the peer's answer in) and dies before the far NAT, which
// keeps nothing; with the NATs adjacent (no router between) the same
// datagram reaches the far NAT and is kept there, and a ttl of 1 does not
// even pass the sender's own NAT.
func TestTTLOpensOwnNATOnly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hops     int
		farKeeps bool
	}{{"one router each", 1, false}, {"adjacent", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, netsim.NATConfig{})
			cfg := keepingNAT
			cfg.Hops = tc.hops
			natA := l.net.NewNAT(netip.MustParseAddr("198.18.1.1"), cfg)
			natB := l.net.NewNAT(netip.MustParseAddr("198.18.2.1"), cfg)
			a := l.net.NewHost(netip.MustParseAddr("10.1.0.2"), natA)
			b := l.net.NewHost(netip.MustParseAddr("10.2.0.2"), natB)
			for _, h := range []*netsim.Host{a, b} {
				fns, _, err := h.Open(41641)
				if err != nil {
					t.Fatal(err)
				}
				l.recv[h] = fns[0]
				t.Cleanup(func() { h.Close() })
			}
			pubA := netip.AddrPortFrom(natA.Public(), 41641)
			pubB := netip.AddrPortFrom(natB.Public(), 41641)
			epB, _ := a.ParseEndpoint(pubB.String())
			if err := a.SendTTL([]byte("ttl 1"), epB, 1); err != nil {
				t.Fatal(err)
			}
			if natA.Mappings() != 0 || l.net.TimeExceeded.Load() != 1 {
				t.Fatalf("ttl 1: %d mappings at a's NAT, %d time exceeded; want 0 and 1", natA.Mappings(), l.net.TimeExceeded.Load())
			}
			a.SendTTL([]byte("opener"), epB, 2)
			if natA.Mappings() != 1 {
				t.Fatalf("ttl 2 made %d mappings at a's NAT, want 1", natA.Mappings())
			}
			if got := natB.Kept.Load() == 1; got != tc.farKeeps {
				t.Fatalf("far NAT kept %d datagrams; want kept: %v", natB.Kept.Load(), tc.farKeeps)
			}
			l.send(b, pubA, "probe")
			from := l.got(a, "probe")
			if tc.farKeeps {
				// b's flow to a was diverted: a's mapping is for b's
				// preserved port only, so the probe is kept, not let in.
				if from.IsValid() || natB.Diverted.Load() != 1 {
					t.Fatalf("adjacent NATs: probe from %v, diverted %d; want it lost and diverted", from, natB.Diverted.Load())
				}
				return
			}
			if from != pubB {
				t.Fatalf("b's probe arrived from %v, want %v", from, pubB)
			}
			l.send(a, pubB, "answer")
			if from := l.got(b, "answer"); from != pubA {
				t.Fatalf("a's answer arrived from %v, want %v", from, pubA)
			}
		})
	}
}
