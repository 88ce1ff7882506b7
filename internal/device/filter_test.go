package device

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/uapi"
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
	wait.Until(t, "policy drop", func() bool { return b.dev.Stats.DropPolicy.Load() >= 1 })
	noPacket(t, b, 300*time.Millisecond)
	if n := b.dev.Stats.DropPolicy.Load(); n != 1 {
		t.Fatalf("DropPolicy = %d", n)
	}
	// IPv6 is denied too (no rule for a's IPv6 address)... (refused before
	// b starts the flow below, which would let it in)
	v6 := tuntest.UDPPacket(netip.AddrPortFrom(a.ip6, 4000), netip.AddrPortFrom(b.ip6, 5000), []byte("y"))
	a.tun.Inbound <- v6
	wait.Until(t, "IPv6 policy drop", func() bool { return b.dev.Stats.DropPolicy.Load() >= 2 })
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

// With destinations set, b delivers a's packets only to its own
// addresses and its approved route, with no policy as with one; the
// rest counts in DropDestination, not DropPolicy.
func TestFilterDestination(t *testing.T) {
	a, b := newPair(t, nil)
	// a's engine sends b everything (a rogue peer's allowed IPs).
	if err := a.dev.Apply(&uapi.Config{Peers: []uapi.PeerConfig{{PublicKey: b.pub(), ReplaceAllowedIPs: true,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}}}); err != nil {
		t.Fatal(err)
	}
	f := filter.New(0)
	f.SetNoPolicy()
	f.SetDestinations(filter.Destinations{Local: []netip.Addr{b.addr, b.ip6}, Routes: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}})
	b.dev.SetFilter(f)
	for _, dst := range []netip.Addr{netip.MustParseAddr("198.19.1.7"), b.addr, b.ip6} {
		src := a.addr
		if dst.Is6() {
			src = a.ip6
		}
		p := tuntest.UDPPacket(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 5000), []byte("ok"))
		if !tryPing(a, b, p, 5*time.Second) {
			t.Fatalf("packet to %s not delivered", dst)
		}
	}
	for i, dst := range []string{"169.254.169.254", "198.19.2.7", "203.0.113.1"} {
		a.tun.Inbound <- tuntest.UDPPacket(netip.AddrPortFrom(a.addr, 4000), netip.AddrPortFrom(netip.MustParseAddr(dst), 5000), []byte("no"))
		wait.Until(t, "destination drop", func() bool { return b.dev.Stats.DropDestination.Load() >= uint64(i+1) })
	}
	noPacket(t, b, 300*time.Millisecond)
	if n, p := b.dev.Stats.DropDestination.Load(), b.dev.Stats.DropPolicy.Load(); n != 3 || p != 0 {
		t.Fatalf("DropDestination = %d, DropPolicy = %d", n, p)
	}
}
