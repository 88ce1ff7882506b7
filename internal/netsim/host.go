package netsim

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/warrenmesh/warren/internal/conn"
)

// Host is a machine on the network with one address and (while open) one
// UDP socket. It implements conn.Transport.
type Host struct {
	net *Network

	// Guarded by net.mu.
	addr     netip.Addr
	nat      *NAT // nil: on the internet
	sock     *socket
	eps      map[netip.AddrPort]*Endpoint
	nextPort uint16
}

var (
	_ conn.Transport = (*Host)(nil)
	_ conn.TTLSender = (*Host)(nil)
)

// queueLen bounds the datagrams waiting at a socket.
const queueLen = 1024

type datagram struct {
	src netip.AddrPort
	b   []byte
}

type socket struct {
	h      *Host
	port   uint16
	q      chan datagram
	closed chan struct{}
	once   sync.Once
	handed atomic.Int64 // datagrams the reader took and has not come back from
}

// Endpoint is a remote address as a Host hands it out: one pointer per
// address for as long as the host exists.
type Endpoint struct{ ap netip.AddrPort }

// String is the address, e.g. "198.18.0.1:41641".
func (e *Endpoint) String() string { return e.ap.String() }

// Addr is the address.
func (e *Endpoint) Addr() netip.AddrPort { return e.ap }

// Addr is the host's own address (private when behind a NAT).
func (h *Host) Addr() netip.Addr {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	return h.addr
}

// LocalAddr is the bound socket's address, invalid while closed.
func (h *Host) LocalAddr() netip.AddrPort {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	if h.sock == nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(h.addr, h.sock.port)
}

// Pending is the number of datagrams waiting at the open socket.
func (h *Host) Pending() int {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	if h.sock == nil {
		return 0
	}
	return len(h.sock.q)
}

func (h *Host) endpointLocked(ap netip.AddrPort) *Endpoint {
	e := h.eps[ap]
	if e == nil {
		e = &Endpoint{ap: ap}
		h.eps[ap] = e
	}
	return e
}

// Open binds the host's socket to port (0: the next free one from 40000)
// and returns its receive function.
func (h *Host) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	if h.sock != nil {
		return nil, 0, fmt.Errorf("netsim: host %v: already open", h.addr)
	}
	if port == 0 {
		port = h.nextPort
		h.nextPort++
	}
	s := &socket{h: h, port: port, q: make(chan datagram, queueLen), closed: make(chan struct{})}
	h.sock = s
	return []conn.ReceiveFunc{s.receive}, port, nil
}

// Close closes the socket; its reader returns net.ErrClosed, datagrams
// waiting are dropped.
func (h *Host) Close() error {
	h.net.mu.Lock()
	s := h.sock
	h.sock = nil
	h.net.mu.Unlock()
	if s != nil {
		s.close()
	}
	return nil
}

// SetMark does nothing: there are no routing rules to steer.
func (h *Host) SetMark(uint32) error { return nil }

// BatchSize is the most datagrams a receive returns at once.
func (h *Host) BatchSize() int { return 16 }

// ParseEndpoint parses "IP:port".
func (h *Host) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("netsim: endpoint %q: %w", s, err)
	}
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	return h.endpointLocked(ap), nil
}

// Send sends each buffer as one datagram to ep from the open socket, with
// time to live DefaultTTL.
func (h *Host) Send(bufs [][]byte, ep conn.Endpoint) error {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	if h.sock == nil {
		return net.ErrClosed
	}
	src := netip.AddrPortFrom(h.addr, h.sock.port)
	dst := ep.Addr()
	for _, b := range bufs {
		h.net.route(h, src, dst, append([]byte(nil), b...), DefaultTTL)
	}
	return nil
}

// SendTTL sends b as one datagram to ep with time to live ttl: the host's
// NAT forwards it only with a ttl of 2 or more, and it reaches another NAT
// only with more than the routers between them (their Hops) left.
func (h *Host) SendTTL(b []byte, ep conn.Endpoint, ttl int) error {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	if h.sock == nil {
		return net.ErrClosed
	}
	h.net.route(h, netip.AddrPortFrom(h.addr, h.sock.port), ep.Addr(), append([]byte(nil), b...), ttl)
	return nil
}

// deliverLocked queues a datagram from src at the host's socket if it is
// bound to port. h.net.mu is held.
func (h *Host) deliverLocked(src netip.AddrPort, port uint16, b []byte) {
	s := h.sock
	if s == nil || s.port != port {
		h.net.NoRoute.Add(1)
		return
	}
	if h.net.tap != nil {
		h.net.tap(src, netip.AddrPortFrom(h.addr, port), b)
	}
	h.net.inflight.Add(1)
	select {
	case s.q <- datagram{src: src, b: b}:
	default:
		h.net.inflight.Add(-1)
		h.net.QueueFull.Add(1)
	}
}

// release ends the reader's hold on what it took last.
func (s *socket) release() { s.h.net.inflight.Add(-s.handed.Swap(0)) }

func (s *socket) close() {
	s.once.Do(func() { close(s.closed) })
	for {
		select {
		case <-s.q:
			s.h.net.inflight.Add(-1)
		default:
			s.release()
			return
		}
	}
}

func (s *socket) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	s.release()
	var d datagram
	select {
	case d = <-s.q:
	case <-s.closed:
		return 0, net.ErrClosed
	}
	n := 0
	s.h.net.mu.Lock()
	for {
		sizes[n] = copy(bufs[n], d.b)
		eps[n] = s.h.endpointLocked(d.src)
		n++
		if n == len(bufs) {
			break
		}
		select {
		case d = <-s.q:
			continue
		default:
		}
		break
	}
	s.h.net.mu.Unlock()
	s.handed.Store(int64(n))
	select {
	case <-s.closed:
		s.release() // closed meanwhile: nobody comes back for more
	default:
	}
	return n, nil
}
