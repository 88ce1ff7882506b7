package device

import (
	"net/netip"
	"testing"
	"time"

	"warren/internal/filter"
	"warren/internal/tun/tuntest"
)

// With a filter, b delivers only what its rules allow and the replies to
// flows b started; refused packets count in DropPolicy.
func TestFilterHook(t *testing.T) {
	a, b := newPair(t, nil)
	ping(t, a, b, false) // sessions up, no filter yet
	f := filter.New(0)
	f.Set(&filter.Spec{Rules: []filter.Rule{{
		Src: []netip.Prefix{netip.PrefixFrom(a.addr, 32)}, Protos: []int{filter.ProtoUDP}, Ports: []filter.PortRange{{First: 5000, Last: 5000}},
	}}})
	b.dev.SetFilter(f)
	ping(t, a, b, false) // UDP to 5000 is allowed
	denied := tuntest.UDPPacket(netip.AddrPortFrom(a.addr, 4000), netip.AddrPortFrom(b.addr, 22), []byte("x"))
	a.tun.Inbound <- denied
	waitFor(t, "policy drop", func() bool { return b.dev.Stats.DropPolicy.Load() >= 1 })
	noPacket(t, b, 300*time.Millisecond)
	if n := b.dev.Stats.DropPolicy.Load(); n != 1 {
		t.Fatalf("DropPolicy = %d", n)
	}
	// IPv6 is denied too (no rule for a's IPv6 address)... (refused before
	// b starts the flow below, which would let it in)
	v6 := tuntest.UDPPacket(netip.AddrPortFrom(a.ip6, 4000), netip.AddrPortFrom(b.ip6, 5000), []byte("y"))
	a.tun.Inbound <- v6
	waitFor(t, "IPv6 policy drop", func() bool { return b.dev.Stats.DropPolicy.Load() >= 2 })
	noPacket(t, b, 300*time.Millisecond)
	if n := b.dev.Stats.DropPolicy.Load(); n != 2 {
		t.Fatalf("DropPolicy = %d after the IPv6 packet", n)
	}
	// ... until b starts the flow: then a's reply passes.
	out := tuntest.UDPPacket(netip.AddrPortFrom(b.ip6, 5000), netip.AddrPortFrom(a.ip6, 4000), []byte("out"))
	if !tryPing(b, a, out, 5*time.Second) {
		t.Fatal("b's packet not delivered to a")
	}
	if !tryPing(a, b, v6, 5*time.Second) {
		t.Fatal("reply to b's flow refused")
	}
	b.dev.SetFilter(nil)
	if !tryPing(a, b, denied, 5*time.Second) {
		t.Fatal("removing the filter did not open")
	}
}
