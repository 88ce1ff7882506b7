package udp

import (
	"fmt"
	"testing"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/nettest"
)

// TestGSOMessagesCrossDeviceWhole sends full UDP_SEGMENT messages over a
// veth pair between two namespaces and checks that each arrives whole (one
// GRO message at the receiver). A device takes a GSO packet as it is only if
// the whole frame, link, IP and UDP headers included, is shorter than its
// gso_max_size (64 KiB); a longer one is cut into datagrams in software
// before it leaves, and every hop after pays per datagram. WireGuard
// datagrams of 1424 bytes (the embedded node's full segments) packed to the
// largest IPv4 UDP payload made such frames.
func TestGSOMessagesCrossDeviceWhole(t *testing.T) {
	a := nettest.NewNS(t, "wga")
	b := nettest.NewNS(t, "wgb")
	nettest.Veth(t, a, "ga", []string{"198.18.1.1/24", "fd00:1::1/64"}, b, "gb", []string{"198.18.1.2/24", "fd00:1::2/64"})
	var ta, tb *Transport
	var bFns []conn.ReceiveFunc
	if err := a.Do(func() (err error) {
		ta = New()
		_, _, err = ta.Open(0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	if err := b.Do(func() (err error) {
		tb = New()
		bFns, _, err = tb.Open(51820)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	needOffload(t, ta)
	needOffload(t, tb)
	for i, to := range []string{"198.18.1.2:51820", "[fd00:1::2]:51820"} {
		for _, size := range []int{1424, 1400, 1000} {
			t.Run(fmt.Sprintf("%s/%d", to, size), func(t *testing.T) {
				ep, err := ta.ParseEndpoint(to)
				if err != nil {
					t.Fatal(err)
				}
				sent := sized(repeat(200, size)...)
				gso, gro := ta.Stats.GSOMessages.Load(), tb.Stats.GROMessages.Load()
				if err := ta.Send(sent, ep); err != nil {
					t.Fatal(err)
				}
				got := collectSized(t, tb, bFns[i], len(sent), BatchSize, 65535)
				if len(got) != len(sent) {
					t.Fatalf("%d datagrams, want %d", len(got), len(sent))
				}
				gso, gro = ta.Stats.GSOMessages.Load()-gso, tb.Stats.GROMessages.Load()-gro
				t.Logf("%d datagrams of %d bytes sent in %d GSO messages, received in %d GRO messages", len(sent), size, gso, gro)
				if gso == 0 || gro != gso {
					t.Fatalf("%d GSO messages sent, %d arrived whole: the rest were cut up on the way", gso, gro)
				}
			})
		}
	}
}
