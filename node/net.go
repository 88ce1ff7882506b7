package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/warrenmesh/warren/internal/netstack"
)

// family is what a network name allows: "tcp" both, "tcp4" IPv4 only,
// "tcp6" IPv6 only (likewise udp).
func family(network string) (proto string, v4, v6 bool, err error) {
	switch network {
	case "tcp", "udp":
		return network, true, true, nil
	case "tcp4", "udp4":
		return network[:3], true, false, nil
	case "tcp6", "udp6":
		return network[:3], false, true, nil
	}
	return "", false, false, fmt.Errorf("network %q: want tcp, tcp4, tcp6, udp, udp4 or udp6", network)
}

// listenAddrs are the node's own addresses that host ("" or an
// unspecified address: all of them in the allowed families; else one of
// them) names.
func (n *Node) listenAddrs(host string, v4, v6 bool) ([]netip.Addr, error) {
	own := n.Addrs()
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("host %q: want one of the node's tunnel addresses %v, or none", host, own)
		}
		a = a.Unmap()
		if !a.IsUnspecified() {
			if !contains(own, a) {
				return nil, fmt.Errorf("%s is not one of the node's tunnel addresses %v", a, own)
			}
			if (a.Is4() && !v4) || (a.Is6() && !v6) {
				return nil, fmt.Errorf("%s is not of the network's family", a)
			}
			return []netip.Addr{a}, nil
		}
		v4, v6 = v4 && a.Is4(), v6 && a.Is6()
	}
	var out []netip.Addr
	for _, a := range own {
		if (a.Is4() && v4) || (a.Is6() && v6) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the node has no address of the network's family (it has %v)", own)
	}
	return out, nil
}

func contains(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// listenOn checks a Listen or ListenPacket call for protocol want ("tcp"
// or "udp") and returns the node's addresses and the port to listen on.
func (n *Node) listenOn(want, network, addr string) ([]netip.Addr, uint16, error) {
	fail := func(err error) ([]netip.Addr, uint16, error) {
		return nil, 0, fmt.Errorf("node: listen %s %q: %w", network, addr, err)
	}
	proto, v4, v6, err := family(network)
	if err != nil || proto != want {
		other := map[string]string{"tcp": "ListenPacket for udp", "udp": "Listen for tcp"}[want]
		return fail(fmt.Errorf("network %q: want %s, %s4 or %s6 (%s)", network, want, want, want, other))
	}
	host, port, err := splitPort(addr)
	if err != nil {
		return fail(err)
	}
	if err := n.running(); err != nil {
		return nil, 0, err
	}
	ips, err := n.listenAddrs(host, v4, v6)
	if err != nil {
		return fail(err)
	}
	return ips, port, nil
}

// Listen listens for TCP connections from the mesh on the node's tunnel
// addresses: network is "tcp" (IPv4 and IPv6), "tcp4" or "tcp6"; addr is
// ":PORT" (every address of the node in those families) or "IP:PORT"
// with one of the node's addresses. Nothing outside the mesh can connect;
// the access policy decides which peers may. Call Up first.
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	fail := func(err error) (net.Listener, error) {
		return nil, fmt.Errorf("node: listen %s %q: %w", network, addr, err)
	}
	ips, port, err := n.listenOn("tcp", network, addr)
	if err != nil {
		return nil, err
	}
	st := n.d.Netstack()
	l := &listener{conns: make(chan net.Conn), done: make(chan struct{})}
	for _, ip := range ips {
		ln, err := st.ListenTCP(netip.AddrPortFrom(ip, port))
		if err != nil {
			for _, o := range l.lns {
				o.Close()
			}
			return fail(err)
		}
		l.lns = append(l.lns, ln)
	}
	if port == 0 && len(l.lns) > 1 {
		// One port on every address: take the first one's for the rest.
		port = netstack.AddrPortOf(l.lns[0].Addr()).Port()
		for i, ip := range ips[1:] {
			l.lns[i+1].Close()
			ln, err := st.ListenTCP(netip.AddrPortFrom(ip, port))
			if err != nil {
				l.lns[0].Close()
				return fail(err)
			}
			l.lns[i+1] = ln
		}
	}
	for _, ln := range l.lns {
		l.wg.Add(1)
		go l.accept(ln)
	}
	l.c = n.track(l.close)
	return l, nil
}

// listener merges the netstack listeners on each of the node's addresses.
type listener struct {
	lns   []net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	c     *closer
}

func (l *listener) accept(ln net.Listener) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) close() {
	l.once.Do(func() {
		close(l.done)
		for _, ln := range l.lns {
			ln.Close()
		}
		l.wg.Wait()
	})
}

func (l *listener) Close() error {
	l.c.Close()
	return nil
}

// Addr is the first address listened on (the IPv4 one if any).
func (l *listener) Addr() net.Addr { return l.lns[0].Addr() }

// ListenPacket opens a UDP socket on the mesh: network is "udp", "udp4"
// or "udp6"; addr is ":PORT" (the node's IPv4 address, or with "udp6"
// its IPv6 one) or "IP:PORT" with one of the node's addresses. Call Up
// first.
func (n *Node) ListenPacket(network, addr string) (net.PacketConn, error) {
	fail := func(err error) (net.PacketConn, error) {
		return nil, fmt.Errorf("node: listen %s %q: %w", network, addr, err)
	}
	ips, port, err := n.listenOn("udp", network, addr)
	if err != nil {
		return nil, err
	}
	pc, err := n.d.Netstack().ListenUDP(netip.AddrPortFrom(ips[0], port))
	if err != nil {
		return fail(err)
	}
	p := &packetConn{PacketConn: pc}
	p.c = n.track(func() { pc.Close() })
	return p, nil
}

type packetConn struct {
	net.PacketConn
	c *closer
}

func (p *packetConn) Close() error {
	p.c.Close()
	return nil
}

// Dial connects to addr ("HOST:PORT") through the mesh: HOST is a node's
// MagicDNS name (bare, "db", or full), a custom DNS record of the mesh,
// or a tunnel address; network is "tcp", "tcp4", "tcp6", "udp", "udp4"
// or "udp6". A name MagicDNS does not know fails with ErrNoSuchName, an
// address no peer routes at once; a peer that does not answer (offline,
// or its policy drops us) only when ctx ends, so give ctx a deadline.
// Call Up first.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	fail := func(err error) (net.Conn, error) {
		return nil, fmt.Errorf("node: dial %s %s: %w", network, addr, err)
	}
	proto, v4, v6, err := family(network)
	if err != nil {
		return fail(err)
	}
	host, port, err := splitPort(addr)
	if err != nil {
		return fail(err)
	}
	if err := n.running(); err != nil {
		return nil, err
	}
	ips, err := n.d.LookupMesh(ctx, host)
	if err != nil {
		return fail(err)
	}
	var ip netip.Addr
	for _, a := range ips {
		if (a.Is4() && v4) || (a.Is6() && v6) {
			ip = a
			break
		}
	}
	if !ip.IsValid() {
		return fail(fmt.Errorf("%s has no address of the network's family (%v)", host, ips))
	}
	if !n.d.Routable(ip) {
		return fail(fmt.Errorf("%s is not on the mesh (no peer routes it)", ip))
	}
	st := n.d.Netstack()
	var c net.Conn
	if proto == "tcp" {
		c, err = st.DialTCP(ctx, netip.AddrPortFrom(ip, port))
	} else {
		c, err = st.DialUDP(netip.AddrPortFrom(ip, port))
	}
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("no answer: %w", ctx.Err()))
		}
		return fail(err)
	}
	return c, nil
}

// closer is something Close closes: a listener or packet conn the
// program has not closed itself.
type closer struct {
	n    *Node
	once sync.Once
	f    func()
}

// track registers f to run at Close (or when the closer it returns is
// closed first).
func (n *Node) track(f func()) *closer {
	c := &closer{n: n, f: f}
	n.mu.Lock()
	closed := n.closed
	if !closed {
		n.closers[c] = struct{}{}
	}
	n.mu.Unlock()
	if closed {
		c.Close()
	}
	return c
}

func (c *closer) Close() {
	c.once.Do(func() {
		c.n.mu.Lock()
		delete(c.n.closers, c)
		c.n.mu.Unlock()
		c.f()
	})
}
