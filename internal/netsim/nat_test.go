package netsim_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/netsim"
	"github.com/warrenmesh/warren/internal/stun"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// lab is a network with one host behind a NAT and two servers on the
// internet, each with its socket open.
type lab struct {
	t      *testing.T
	clk    *clock.Fake
	net    *netsim.Network
	nat    *netsim.NAT
	inside *netsim.Host
	s1, s2 *netsim.Host
	recv   map[*netsim.Host]conn.ReceiveFunc
}

var (
	natIP = netip.MustParseAddr("198.18.0.1")
	s1IP  = netip.MustParseAddr("198.18.9.1")
	s2IP  = netip.MustParseAddr("198.18.9.2")
	lanIP = netip.MustParseAddr("10.0.0.2")

	easyConfig = netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressPortDependent}
)

func newLab(t *testing.T, cfg netsim.NATConfig) *lab {
	l := &lab{t: t, clk: clock.NewFake(time.Unix(1000, 0)), recv: map[*netsim.Host]conn.ReceiveFunc{}}
	l.net = netsim.New(l.clk)
	l.nat = l.net.NewNAT(natIP, cfg)
	l.inside = l.net.NewHost(lanIP, l.nat)
	l.s1 = l.net.NewHost(s1IP, nil)
	l.s2 = l.net.NewHost(s2IP, nil)
	for _, h := range []*netsim.Host{l.inside, l.s1, l.s2} {
		fns, _, err := h.Open(0)
		if err != nil {
			t.Fatal(err)
		}
		l.recv[h] = fns[0]
		t.Cleanup(func() { h.Close() })
	}
	return l
}

// send sends one datagram from host from to the address to.
func (l *lab) send(from *netsim.Host, to netip.AddrPort, msg string) {
	l.t.Helper()
	ep, err := from.ParseEndpoint(to.String())
	if err != nil {
		l.t.Fatal(err)
	}
	if err := from.Send([][]byte{[]byte(msg)}, ep); err != nil {
		l.t.Fatal(err)
	}
}

// got returns the source of the datagram waiting at h (checking its
// contents), or an invalid address when nothing arrived. Delivery is
// synchronous: after Send, a datagram is either queued or dropped.
func (l *lab) got(h *netsim.Host, msg string) netip.AddrPort {
	l.t.Helper()
	switch h.Pending() {
	case 0:
		return netip.AddrPort{}
	case 1:
	default:
		l.t.Fatalf("%d datagrams waiting at %v, want at most 1", h.Pending(), h.Addr())
	}
	bufs, sizes, eps := [][]byte{make([]byte, 1500)}, []int{0}, []conn.Endpoint{nil}
	n, err := l.recv[h](bufs, sizes, eps)
	if err != nil || n != 1 {
		l.t.Fatalf("receive: %d, %v", n, err)
	}
	if string(bufs[0][:sizes[0]]) != msg {
		l.t.Fatalf("received %q, want %q", bufs[0][:sizes[0]], msg)
	}
	return eps[0].Addr()
}

// out sends from the inside host to dst and returns the source the
// destination server saw.
func (l *lab) out(dst *netsim.Host, port uint16, msg string) netip.AddrPort {
	l.t.Helper()
	l.send(l.inside, netip.AddrPortFrom(dst.Addr(), port), msg)
	if port != dst.LocalAddr().Port() {
		return netip.AddrPort{}
	}
	src := l.got(dst, msg)
	if !src.IsValid() {
		l.t.Fatalf("%q to %v not delivered", msg, dst.Addr())
	}
	if src.Addr() != natIP {
		l.t.Fatalf("%q arrived from %v, not from the NAT's address", msg, src)
	}
	return src
}

func TestEndpointIndependentMappingKeepsOnePublicPort(t *testing.T) {
	l := newLab(t, netsim.NATConfig{Mapping: netsim.EndpointIndependent})
	a := l.out(l.s1, l.s1.LocalAddr().Port(), "to s1")
	b := l.out(l.s2, l.s2.LocalAddr().Port(), "to s2")
	c := l.out(l.s1, l.s1.LocalAddr().Port(), "to s1 again")
	if a != b || a != c {
		t.Fatalf("public sources %v, %v, %v: want one for all destinations", a, b, c)
	}
	if a.Port() != l.inside.LocalAddr().Port() {
		t.Fatalf("public port %d, want the private one (%d) preserved", a.Port(), l.inside.LocalAddr().Port())
	}
	if m := l.nat.Mappings(); m != 1 {
		t.Fatalf("%d mappings, want 1", m)
	}
}

func TestEndpointDependentMappingTakesAPortPerDestination(t *testing.T) {
	l := newLab(t, netsim.NATConfig{Mapping: netsim.EndpointDependent, Filtering: netsim.AddressPortDependent})
	a := l.out(l.s1, l.s1.LocalAddr().Port(), "to s1")
	b := l.out(l.s2, l.s2.LocalAddr().Port(), "to s2")
	c := l.out(l.s1, l.s1.LocalAddr().Port(), "to s1 again")
	if a == b {
		t.Fatalf("both destinations saw %v: want a port per destination", a)
	}
	if a != c {
		t.Fatalf("s1 saw %v then %v: want the flow's mapping kept", a, c)
	}
	if m := l.nat.Mappings(); m != 2 {
		t.Fatalf("%d mappings, want 2", m)
	}
	// What s1 saw does not reach the host from s2: the mapping is s1's.
	l.send(l.s2, a, "s2 to s1's mapping")
	if src := l.got(l.inside, "s2 to s1's mapping"); src.IsValid() {
		t.Fatalf("s2 got in through s1's mapping (from %v)", src)
	}
}

// TestFiltering: after the inside host sent to s1's port, which inbound
// datagrams each filtering lets through its mapping, one by one.
func TestFiltering(t *testing.T) {
	type want struct{ samePort, otherPort, otherAddr bool }
	for _, tc := range []struct {
		name string
		f    netsim.Filtering
		want want
	}{
		{"endpoint-independent", netsim.AnyInbound, want{true, true, true}},
		{"address-dependent", netsim.AddressDependent, want{true, true, false}},
		{"address-and-port-dependent", netsim.AddressPortDependent, want{true, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: tc.f})
			priv := l.inside.LocalAddr()
			pub := netip.AddrPortFrom(natIP, priv.Port())

			// No mapping yet: nothing gets in, whatever the filtering.
			l.send(l.s1, pub, "unsolicited")
			if src := l.got(l.inside, "unsolicited"); src.IsValid() {
				t.Fatalf("unsolicited datagram let in before any mapping (from %v)", src)
			}
			l.out(l.s1, l.s1.LocalAddr().Port(), "open")
			filtered := l.nat.Filtered.Load()

			check := func(what string, from *netsim.Host, fromPort uint16, wantIn bool) {
				t.Helper()
				src := netip.AddrPortFrom(from.Addr(), fromPort)
				if fromPort != from.LocalAddr().Port() { // a second socket's port: reopen there
					from.Close()
					fns, _, err := from.Open(fromPort)
					if err != nil {
						t.Fatal(err)
					}
					l.recv[from] = fns[0]
				}
				l.send(from, pub, what)
				got := l.got(l.inside, what)
				switch {
				case wantIn && got != src:
					t.Fatalf("%s: got source %v, want %v let in", what, got, src)
				case !wantIn && got.IsValid():
					t.Fatalf("%s: let in, want it filtered", what)
				case !wantIn && l.nat.Filtered.Load() != filtered+1:
					t.Fatalf("%s: dropped but not counted as filtered", what)
				}
				filtered = l.nat.Filtered.Load()
			}
			s1Port := l.s1.LocalAddr().Port()
			check("from s1's port", l.s1, s1Port, tc.want.samePort)
			check("from s2", l.s2, l.s2.LocalAddr().Port(), tc.want.otherAddr)
			check("from another port of s1", l.s1, s1Port+1, tc.want.otherPort)
		})
	}
}

func TestBlockedUDPDropsBothWaysUntilUnblocked(t *testing.T) {
	l := newLab(t, netsim.NATConfig{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressPortDependent})
	s1 := l.s1.LocalAddr()
	pub := l.out(l.s1, s1.Port(), "before")

	l.nat.SetBlocked(true)
	l.send(l.inside, s1, "out while blocked")
	if src := l.got(l.s1, "out while blocked"); src.IsValid() {
		t.Fatal("outbound datagram passed a blocked NAT")
	}
	l.send(l.s1, pub, "in while blocked")
	if src := l.got(l.inside, "in while blocked"); src.IsValid() {
		t.Fatal("inbound datagram passed a blocked NAT")
	}
	if b := l.nat.Blocked.Load(); b != 2 {
		t.Fatalf("Blocked = %d, want 2", b)
	}

	l.nat.SetBlocked(false)
	l.send(l.s1, pub, "in after")
	if src := l.got(l.inside, "in after"); src != s1 {
		t.Fatalf("after unblocking, reply arrived from %v, want %v (the mapping kept)", src, s1)
	}
}

// TestMappingsExpireOnTheClock: a mapping lives Timeout after its last
// outgoing datagram; inbound traffic does not refresh it.
func TestMappingsExpireOnTheClock(t *testing.T) {
	l := newLab(t, netsim.NATConfig{Mapping: netsim.EndpointDependent, Filtering: netsim.AddressPortDependent, Timeout: 30 * time.Second})
	s1 := l.s1.LocalAddr()
	pub := l.out(l.s1, s1.Port(), "open")

	l.clk.Advance(29 * time.Second)
	l.send(l.s1, pub, "at 29s")
	if src := l.got(l.inside, "at 29s"); src != s1 {
		t.Fatal("mapping gone before its timeout")
	}
	l.clk.Advance(time.Second) // 30 s after the last outgoing datagram
	l.send(l.s1, pub, "at 30s")
	if src := l.got(l.inside, "at 30s"); src.IsValid() {
		t.Fatal("mapping still open at its timeout: inbound traffic must not refresh it")
	}
	if m := l.nat.Mappings(); m != 0 {
		t.Fatalf("%d live mappings after the timeout", m)
	}
	again := l.out(l.s1, s1.Port(), "reopen")
	if again == pub {
		t.Fatalf("an endpoint-dependent NAT reused port %d after expiry (random ports expected)", pub.Port())
	}
	l.clk.Advance(20 * time.Second)
	l.out(l.s1, s1.Port(), "refresh")
	l.clk.Advance(20 * time.Second) // 40 s after opening, 20 s after the refresh
	l.send(l.s1, again, "after refresh")
	if src := l.got(l.inside, "after refresh"); src != s1 {
		t.Fatal("outgoing traffic did not refresh the mapping")
	}
}

// TestSTUNReportsTheMappingOfTheFlowToIt: behind an easy NAT, STUN's
// answer is the address a peer reaches; behind a hard one it is not.
func TestSTUNReportsTheMappingOfTheFlowToIt(t *testing.T) {
	for _, m := range []netsim.Mapping{netsim.EndpointIndependent, netsim.EndpointDependent} {
		t.Run(fmt.Sprint(m), func(t *testing.T) {
			l := newLab(t, netsim.NATConfig{Mapping: m, Filtering: netsim.AddressDependent})
			stunAddr := netip.AddrPortFrom(netip.MustParseAddr("198.18.9.9"), 3478)
			l.net.AddSTUN(stunAddr)
			tx := stun.NewTxID()
			req := stun.AppendRequest(nil, tx)
			l.send(l.inside, stunAddr, string(req))
			if l.inside.Pending() != 1 {
				t.Fatal("no STUN answer")
			}
			bufs, sizes, eps := [][]byte{make([]byte, 1500)}, []int{0}, []conn.Endpoint{nil}
			if _, err := l.recv[l.inside](bufs, sizes, eps); err != nil {
				t.Fatal(err)
			}
			if eps[0].Addr() != stunAddr {
				t.Fatalf("STUN answer from %v", eps[0].Addr())
			}
			msg, err := stun.Parse(bufs[0][:sizes[0]])
			if err != nil || msg.TxID != tx {
				t.Fatalf("STUN answer %v, %v", msg, err)
			}
			toPeer := l.out(l.s1, l.s1.LocalAddr().Port(), "to a peer")
			if same := msg.Mapped == toPeer; same != (m == netsim.EndpointIndependent) {
				t.Fatalf("STUN says %v, the peer sees %v", msg.Mapped, toPeer)
			}
		})
	}
}

// TestIdleUntilTheReaderComesBack: a datagram counts as on its way until
// its reader asked for more after taking it, so a test can wait for the
// hosts to have acted on everything sent; the tap sees each delivery.
func TestIdleUntilTheReaderComesBack(t *testing.T) {
	l := newLab(t, netsim.NATConfig{})
	var tapped string
	l.net.SetTap(func(src, dst netip.AddrPort, b []byte) { tapped = fmt.Sprintf("%v → %v %s", src, dst, b) })
	if !l.net.Idle() {
		t.Fatal("a fresh network is not idle")
	}
	l.send(l.s1, l.s2.LocalAddr(), "x")
	if l.net.Idle() {
		t.Fatal("idle with a datagram queued")
	}
	if tapped != "198.18.9.1:40000 → 198.18.9.2:40000 x" {
		t.Fatalf("tap saw %q", tapped)
	}
	if src := l.got(l.s2, "x"); src != l.s1.LocalAddr() {
		t.Fatalf("got from %v", src)
	}
	if l.net.Idle() {
		t.Fatal("idle while the reader still handles what it took")
	}
	done := make(chan error)
	go func() {
		_, err := l.recv[l.s2]([][]byte{make([]byte, 10)}, []int{0}, []conn.Endpoint{nil})
		done <- err
	}()
	wait.Until(t, "network idle once the reader is back", l.net.Idle)
	s2 := l.s2.LocalAddr()
	l.s2.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("receive after Close: %v, want net.ErrClosed", err)
	}
	l.send(l.s1, s2, "to a closed socket")
	if !l.net.Idle() || l.net.NoRoute.Load() != 1 {
		t.Fatalf("datagram to a closed socket: idle=%v NoRoute=%d, want dropped and counted", l.net.Idle(), l.net.NoRoute.Load())
	}
}

// TestMoveHost: a host moving to another NAT keeps its socket; what it
// sends leaves from the new NAT, and the old NAT's mapping no longer
// reaches it.
func TestMoveHost(t *testing.T) {
	l := newLab(t, easyConfig)
	s1 := l.s1.LocalAddr()
	oldPub := l.out(l.s1, s1.Port(), "from the old network")

	nat2 := l.net.NewNAT(netip.MustParseAddr("198.18.0.7"), easyConfig)
	l.net.MoveHost(l.inside, netip.MustParseAddr("10.7.0.2"), nat2)
	if a := l.inside.LocalAddr(); a.Addr() != netip.MustParseAddr("10.7.0.2") {
		t.Fatalf("LocalAddr %v after the move", a)
	}
	l.send(l.inside, s1, "from the new network")
	if src := l.got(l.s1, "from the new network"); src.Addr() != nat2.Public() {
		t.Fatalf("after the move, s1 sees %v, want the new NAT's address", src)
	}
	noRoute := l.net.NoRoute.Load()
	l.send(l.s1, oldPub, "to the old mapping")
	if src := l.got(l.inside, "to the old mapping"); src.IsValid() {
		t.Fatal("the old NAT's mapping still reaches the host that left")
	}
	if l.net.NoRoute.Load() != noRoute+1 {
		t.Fatal("datagram for a host that left not counted")
	}
}
