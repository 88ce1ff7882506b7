package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	glog "gvisor.dev/gvisor/pkg/log"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const nicID tcpip.NICID = 1

// TCP buffer sizes: large, so one flow fills a fast tunnel (netstack's
// defaults are 1 MiB); moderated by netstack's receive-buffer auto-tuning.
const (
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 8 << 20
)

// Stack is a gVisor TCP/IP stack on a Device: the node's tunnel
// addresses live in it, every destination is routed to the engine, and
// programs of the node reach the mesh through Dial and Listen.
type Stack struct {
	s   *stack.Stack
	dev *Device

	mu    sync.Mutex
	addrs []netip.Prefix
	// inbound, if set, gets TCP connections to ports nothing listens on
	// (see SetInboundTCP).
	inbound func(local, remote netip.AddrPort, accept func() (net.Conn, error), reject func())
}

// quietGVisor silences gVisor's logger, once per process: it is global
// and writes to the process's stderr (warnings such as a segment for a
// listener that just closed), which in an embedded node is the host
// program's. What matters is counted (Stats, the stack's counters).
var quietGVisor = sync.OnceFunc(func() { glog.SetTarget(discardLog{}) })

type discardLog struct{}

func (discardLog) Emit(int, glog.Level, time.Time, string, ...any) {}

// New creates a stack on a new Device of the given MTU.
func New(mtu int) (*Stack, error) {
	quietGVisor()
	dev := NewDevice(mtu)
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	sack := tcpip.TCPSACKEnabled(true)
	recov := tcpip.TCPRACKLossDetection
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	opts := []tcpip.SettableTransportProtocolOption{
		&sack, &recov, &moderate,
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			s.Destroy()
			return nil, fmt.Errorf("netstack: TCP option %T: %v", o, err)
		}
	}
	if err := s.CreateNIC(nicID, dev.Link()); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("netstack: create NIC: %v", err)
	}
	// Every destination goes to the engine, which routes by allowed IPs
	// and drops what no peer takes.
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	st := &Stack{s: s, dev: dev}
	fwd := tcp.NewForwarder(s, 0, 1024, st.forwardTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	return st, nil
}

// Device is the stack's packet device, for the engine.
func (st *Stack) Device() *Device { return st.dev }

// Close tears the stack down and closes its device.
func (st *Stack) Close() {
	st.dev.Close()
	st.s.Close()
	st.s.Wait()
	st.s.Destroy()
}

// SetAddresses makes the stack hold exactly addrs (the node's tunnel
// addresses and the service addresses it answers on).
func (st *Stack) SetAddresses(addrs []netip.Prefix) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	var errs []error
	for _, a := range st.addrs {
		if !slices.Contains(addrs, a) {
			if err := st.s.RemoveAddress(nicID, tcpip.AddrFromSlice(a.Addr().AsSlice())); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %v", a, err))
			}
		}
	}
	for _, a := range addrs {
		if slices.Contains(st.addrs, a) {
			continue
		}
		proto := ipv4.ProtocolNumber
		if a.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{
			Address: tcpip.AddrFromSlice(a.Addr().AsSlice()), PrefixLen: a.Bits()}}
		if err := st.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			errs = append(errs, fmt.Errorf("add %s: %v", a, err))
		}
	}
	st.addrs = slices.Clone(addrs)
	return errors.Join(errs...)
}

// RxPackets is how many packets the stack's IP layer received: fewer
// than the device's InPackets when Write merged segments.
func (st *Stack) RxPackets() uint64 {
	return st.s.NICInfo()[nicID].Stats.Rx.Packets.Value()
}

// Addresses returns the addresses the stack holds.
func (st *Stack) Addresses() []netip.Prefix {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.addrs)
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	a := ap.Addr().Unmap()
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return fa, proto
}

// DialTCP connects to dst through the mesh.
func (st *Stack) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	return gonet.DialContextTCP(ctx, st.s, fa, proto)
}

// DialUDP returns a UDP socket connected to dst through the mesh.
func (st *Stack) DialUDP(dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	return gonet.DialUDP(st.s, nil, &fa, proto)
}

// ListenTCP listens on addr (one of the stack's addresses, or the
// unspecified address of a family for all of them).
func (st *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(addr)
	return gonet.ListenTCP(st.s, fa, proto)
}

// ListenUDP opens a UDP socket on addr.
func (st *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	fa, proto := fullAddr(addr)
	return gonet.DialUDP(st.s, &fa, nil, proto)
}

// SetInboundTCP has f called for each TCP connection from the mesh to a
// port of the stack's addresses that nothing listens on. f runs on its
// own goroutine and must call exactly one of accept (which completes the
// handshake and returns the connection) and reject (which answers with a
// reset). nil: such connections are refused.
func (st *Stack) SetInboundTCP(f func(local, remote netip.AddrPort, accept func() (net.Conn, error), reject func())) {
	st.mu.Lock()
	st.inbound = f
	st.mu.Unlock()
}

// forwardTCP is netstack's TCP forwarder handler: a SYN that no listener
// took.
func (st *Stack) forwardTCP(r *tcp.ForwarderRequest) {
	st.mu.Lock()
	f := st.inbound
	st.mu.Unlock()
	id := r.ID()
	local := netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	if f == nil || !st.isLocal(local.Addr()) {
		r.Complete(true)
		return
	}
	remote := netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort)
	var once sync.Once
	accept := func() (net.Conn, error) {
		var c net.Conn
		err := errors.New("netstack: connection already answered")
		once.Do(func() {
			var wq waiter.Queue
			ep, terr := r.CreateEndpoint(&wq)
			if terr != nil {
				r.Complete(true)
				err = fmt.Errorf("netstack: accept %s: %v", local, terr)
				return
			}
			r.Complete(false)
			c, err = gonet.NewTCPConn(&wq, ep), nil
		})
		return c, err
	}
	reject := func() { once.Do(func() { r.Complete(true) }) }
	go f(local, remote, accept, reject)
}

func (st *Stack) isLocal(a netip.Addr) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, p := range st.addrs {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// AddrPortOf converts a gonet connection address to a netip.AddrPort.
func AddrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// Ping sends one ICMP echo request to dst through the mesh and waits for
// its reply until ctx ends, returning the round-trip time.
func (st *Stack) Ping(ctx context.Context, dst netip.Addr, seq uint16) (time.Duration, error) {
	dst = dst.Unmap()
	netProto, tproto := ipv4.ProtocolNumber, icmp.ProtocolNumber4
	var req []byte
	if dst.Is6() {
		netProto, tproto = ipv6.ProtocolNumber, icmp.ProtocolNumber6
		h := header.ICMPv6(make([]byte, header.ICMPv6EchoMinimumSize+8))
		h.SetType(header.ICMPv6EchoRequest)
		h.SetSequence(seq)
		req = h
	} else {
		h := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+8))
		h.SetType(header.ICMPv4Echo)
		h.SetSequence(seq)
		req = h
	}
	copy(req[len(req)-8:], "warren!!")
	var wq waiter.Queue
	ep, terr := st.s.NewEndpoint(tproto, netProto, &wq)
	if terr != nil {
		return 0, fmt.Errorf("netstack: ICMP endpoint: %v", terr)
	}
	c := gonet.NewUDPConn(&wq, ep)
	defer c.Close()
	if terr := ep.Connect(tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(dst.AsSlice())}); terr != nil {
		return 0, fmt.Errorf("netstack: ping %s: %v", dst, terr)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, err
		}
		if dst.Is6() {
			h := header.ICMPv6(buf[:n])
			if n >= header.ICMPv6EchoMinimumSize && h.Type() == header.ICMPv6EchoReply && h.Sequence() == seq {
				return time.Since(start), nil
			}
		} else {
			h := header.ICMPv4(buf[:n])
			if n >= header.ICMPv4MinimumSize && h.Type() == header.ICMPv4EchoReply && h.Sequence() == seq {
				return time.Since(start), nil
			}
		}
	}
}
