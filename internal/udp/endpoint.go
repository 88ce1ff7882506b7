package udp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/conn"
)

// Endpoint is a remote UDP address. A Transport hands out one *Endpoint per
// address (see ParseEndpoint), so endpoints compare with ==.
type Endpoint struct {
	ap netip.AddrPort
	// The destination in the kernel's form, built once so that sending
	// needs no conversion: sa4 for an IPv4 address, sa6 otherwise.
	sa4 unix.RawSockaddrInet4
	sa6 unix.RawSockaddrInet6
}

var _ conn.Endpoint = (*Endpoint)(nil)

// String formats the endpoint as the configuration protocol does:
// "198.18.0.1:51820" or "[fd00::1]:51820".
func (e *Endpoint) String() string { return e.ap.String() }

// Addr is the remote address and port.
func (e *Endpoint) Addr() netip.AddrPort { return e.ap }

func (e *Endpoint) is4() bool { return e.ap.Addr().Is4() }

// sockaddr returns the destination for msghdr.msg_name.
func (e *Endpoint) sockaddr() (*byte, uint32) {
	if e.is4() {
		return (*byte)(unsafe.Pointer(&e.sa4)), unix.SizeofSockaddrInet4
	}
	return (*byte)(unsafe.Pointer(&e.sa6)), unix.SizeofSockaddrInet6
}

// newEndpoint builds an endpoint of a canonical address: unmapped, and with
// a zone only for an IPv6 address, as a decimal interface index.
func newEndpoint(ap netip.AddrPort) *Endpoint {
	e := &Endpoint{ap: ap}
	a := ap.Addr()
	if a.Is4() {
		e.sa4.Family = unix.AF_INET
		e.sa4.Addr = a.As4()
		putPort(&e.sa4.Port, ap.Port())
		return e
	}
	e.sa6.Family = unix.AF_INET6
	e.sa6.Addr = a.As16()
	putPort(&e.sa6.Port, ap.Port())
	if z := a.Zone(); z != "" {
		idx, _ := strconv.ParseUint(z, 10, 32)
		e.sa6.Scope_id = uint32(idx)
	}
	return e
}

// putPort and getPort access a sockaddr's port, which is in network order.
func putPort(p *uint16, port uint16) {
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(p))[:], port)
}

func getPort(p *uint16) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:])
}

// addrPortFromSockaddr decodes a received source address, held in sa (the
// size of the largest sockaddr the socket returns). It allocates nothing
// unless the address has an interface index of 100 or more as its zone.
func addrPortFromSockaddr(sa *unix.RawSockaddrInet6) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port)), true
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if a.Is4In6() {
			a = a.Unmap()
		} else if sa.Scope_id != 0 {
			a = a.WithZone(strconv.Itoa(int(sa.Scope_id)))
		}
		return netip.AddrPortFrom(a, getPort(&sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// maxEndpoints bounds the table of canonical endpoints, which anyone able to
// send a datagram can grow.
const maxEndpoints = 16384

// endpointTable interns endpoints: one *Endpoint per address. When it is
// full it starts afresh; endpoints handed out before stay valid, they only
// stop being == to the ones handed out after.
type endpointTable struct {
	mu  sync.RWMutex
	m   map[netip.AddrPort]*Endpoint
	gen atomic.Uint64 // bumped when m is replaced, for callers' own caches
}

func (t *endpointTable) get(ap netip.AddrPort) *Endpoint {
	t.mu.RLock()
	e := t.m[ap]
	t.mu.RUnlock()
	if e != nil {
		return e
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e = t.m[ap]; e != nil {
		return e
	}
	if t.m == nil || len(t.m) >= maxEndpoints {
		t.m = make(map[netip.AddrPort]*Endpoint)
		t.gen.Add(1)
	}
	e = newEndpoint(ap)
	t.m[ap] = e
	return e
}

// endpointCache is a receive function's memory of the last source, which
// spares the table lookup for runs of datagrams from one peer.
type endpointCache struct {
	gen uint64
	ap  netip.AddrPort
	ep  *Endpoint
}

func (c *endpointCache) get(t *endpointTable, ap netip.AddrPort) *Endpoint {
	if gen := t.gen.Load(); c.ep != nil && c.gen == gen && c.ap == ap {
		return c.ep
	}
	gen := t.gen.Load()
	c.ep = t.get(ap)
	c.ap = ap
	c.gen = gen
	return c.ep
}

// parseEndpoint parses "IP:port" or "[IPv6]:port" (and "[IPv6%zone]:port",
// the zone an interface name or index) without resolving any name.
func parseEndpoint(s string, zoneIndex func(string) (int, error)) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("udp: endpoint %q: want IP:port or [IPv6]:port: %w", s, err)
	}
	a := ap.Addr().Unmap()
	if z := a.Zone(); z != "" {
		idx, err := strconv.ParseUint(z, 10, 32)
		if err != nil {
			i, ierr := zoneIndex(z)
			if ierr != nil {
				return netip.AddrPort{}, fmt.Errorf("udp: endpoint %q: zone %q: %w", s, z, ierr)
			}
			idx = uint64(i)
		}
		if idx == 0 {
			a = a.WithZone("")
		} else {
			a = a.WithZone(strconv.FormatUint(idx, 10))
		}
	}
	return netip.AddrPortFrom(a, ap.Port()), nil
}
