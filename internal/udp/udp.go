// Package udp is Warren's UDP transport: a conn.Transport over one IPv4 and
// one IPv6-only socket bound to the same port, moving datagrams in batches
// with recvmmsg and sendmmsg through the Go runtime poller, with message
// headers allocated once per receive function and per pooled sender so that
// the steady state allocates nothing. Remote addresses are interned as
// canonical *Endpoint values (one pointer per address, IPv4-mapped IPv6
// addresses unmapped), so the engine can compare endpoints with ==.
//
// Where the kernel offers them, the sockets use UDP segmentation offload
// (UDP_SEGMENT) to send each run of equal-sized datagrams of a batch as one
// message, and UDP receive offload (UDP_GRO) to receive a run of datagrams
// of one flow as one message, which the receive function splits into the
// caller's buffers (see offload_linux.go and batch_linux.go).
package udp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/conn"
)

// BatchSize is the number of datagrams one receive or send call moves.
const BatchSize = 128

// socketBuffer is the send and receive buffer size asked of the kernel.
const socketBuffer = 7 << 20

// Transport is a batched UDP conn.Transport. The zero value is not usable:
// call New.
type Transport struct {
	// Stats counts the datagrams and messages moved, for tests and
	// diagnostics of the offloads.
	Stats Stats

	mu      sync.RWMutex // guards the sockets, mark and offload
	v4      *socket
	v6      *socket
	mark    uint32
	offload bool // whether the sockets being opened may use offloads

	endpoints endpointTable
	senders   sync.Pool // of *sender
	log       atomic.Pointer[slog.Logger]

	// sendFault, set by tests before sending, makes a send of a message
	// of segs datagrams of size bytes fail with the errno it returns (if
	// not 0), to simulate a route that refuses segmentation offload.
	sendFault func(size, segs int) syscall.Errno
}

// Stats counts what a Transport moved since New. A message is one entry of
// a sendmmsg or recvmmsg call: one datagram, or with an offload several.
type Stats struct {
	SentDatagrams atomic.Uint64
	SentMessages  atomic.Uint64
	GSOMessages   atomic.Uint64 // sent messages that carried several datagrams
	GSODisabled   atomic.Uint64 // sockets that stopped using GSO after a send failed
	RecvDatagrams atomic.Uint64
	RecvMessages  atomic.Uint64
	GROMessages   atomic.Uint64 // received messages split into several datagrams
}

var _ conn.Transport = (*Transport)(nil)

// New returns a closed Transport; Open binds it.
func New() *Transport {
	t := &Transport{}
	t.senders.New = func() any { return newSender() }
	return t
}

// BatchSize is the largest batch a receive function fills and a Send moves
// in one system call.
func (t *Transport) BatchSize() int { return BatchSize }

// Open binds an IPv4 socket and an IPv6-only socket to port, or to one
// ephemeral port free in both families if port is 0. If one family is not
// available here it goes on with the other. The receive functions are
// returned IPv4 first.
func (t *Transport) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.v4 != nil || t.v6 != nil {
		return nil, 0, errors.New("udp: transport already open")
	}
	var v4, v6 *socket
	var err error
	t.offload = offloadWanted()
	for try := 0; ; try++ {
		v4, v6, err = t.bindBoth(port)
		if err == nil {
			break
		}
		// The port the kernel chose for IPv4 was taken for IPv6: pick anew.
		if port != 0 || !errors.Is(err, unix.EADDRINUSE) || try == 9 {
			return nil, 0, err
		}
	}
	t.v4, t.v6 = v4, v6
	var fns []conn.ReceiveFunc
	var actual uint16
	for _, s := range []*socket{v4, v6} {
		if s != nil {
			fns = append(fns, newReceiver(s, &t.endpoints).receive)
			actual = s.port
		}
	}
	return fns, actual, nil
}

// bindBoth binds both families to port (v6 to v4's port if port is 0).
func (t *Transport) bindBoth(port uint16) (v4, v6 *socket, err error) {
	v4, err4 := listenHook(t, "udp4", port)
	if err4 != nil && !familyUnavailable(err4) {
		return nil, nil, err4
	}
	if v4 != nil {
		port = v4.port
	}
	v6, err6 := listenHook(t, "udp6", port)
	if err6 != nil {
		if v4 != nil && familyUnavailable(err6) {
			return v4, nil, nil
		}
		if v4 != nil {
			v4.conn.Close()
			return nil, nil, err6
		}
		return nil, nil, errors.Join(err4, err6)
	}
	return v4, v6, nil
}

// familyUnavailable tells whether a bind failed because the address family
// is not usable here (IPv6 disabled, or an IPv6-only namespace).
func familyUnavailable(err error) bool {
	return errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) ||
		errors.Is(err, unix.EADDRNOTAVAIL)
}

// listenHook binds one socket; tests replace it to simulate a missing
// address family or a port taken in one family only.
var listenHook = (*Transport).listen

func (t *Transport) listen(network string, port uint16) (*socket, error) {
	addr := "0.0.0.0"
	if network == "udp6" {
		addr = "::"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = t.setupSocket(int(fd), network == "udp6") }); cerr != nil {
			return cerr
		}
		return err
	}}
	pc, err := lc.ListenPacket(context.Background(), network, net.JoinHostPort(addr, strconv.Itoa(int(port))))
	if err != nil {
		return nil, fmt.Errorf("udp: bind %s port %d: %w", network, port, err)
	}
	c := pc.(*net.UDPConn)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("udp: %w", err)
	}
	s := &socket{conn: c, rc: rc, port: c.LocalAddr().(*net.UDPAddr).AddrPort().Port(), v6: network == "udp6", tr: t}
	if t.offload {
		if err := rc.Control(func(fd uintptr) { s.setupOffload(int(fd)) }); err != nil {
			c.Close()
			return nil, fmt.Errorf("udp: %w", err)
		}
	}
	return s, nil
}

// setupSocket sets a new socket's options before it is bound.
func (t *Transport) setupSocket(fd int, v6 bool) error {
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
	}
	// The FORCE variants pass the rmem_max/wmem_max limits but need
	// CAP_NET_ADMIN; the plain ones are capped silently. Neither is fatal.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
	if t.mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(t.mark)); err != nil {
			return fmt.Errorf("SO_MARK: %w", err)
		}
	}
	return nil
}

// Close closes the sockets; blocked receive functions return an error
// wrapping net.ErrClosed. Closing a closed Transport does nothing.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, s := range []*socket{t.v4, t.v6} {
		if s != nil {
			errs = append(errs, s.conn.Close())
		}
	}
	t.v4, t.v6 = nil, nil
	return errors.Join(errs...)
}

// SetMark sets SO_MARK on the open sockets and on those of later Opens.
func (t *Transport) SetMark(mark uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mark = mark
	for _, s := range []*socket{t.v4, t.v6} {
		if s == nil {
			continue
		}
		var err error
		if cerr := s.rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); cerr != nil {
			return fmt.Errorf("udp: set mark: %w", cerr)
		}
		if err != nil {
			return fmt.Errorf("udp: set mark: %w", err)
		}
	}
	return nil
}

// Send sends each buffer as one datagram to ep, which must be an *Endpoint,
// through the socket of ep's address family.
func (t *Transport) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok || e == nil {
		return fmt.Errorf("udp: send to an endpoint of type %T", ep)
	}
	t.mu.RLock()
	sock, open := t.v6, t.v4 != nil || t.v6 != nil
	if e.is4() {
		sock = t.v4
	}
	t.mu.RUnlock()
	if sock == nil {
		if !open {
			return fmt.Errorf("udp: send: %w", net.ErrClosed)
		}
		return errNoFamily(e)
	}
	s := t.senders.Get().(*sender)
	err := s.sendTo(sock, bufs, e)
	t.senders.Put(s)
	return err
}

func errNoFamily(e *Endpoint) error {
	fam := "IPv6"
	if e.is4() {
		fam = "IPv4"
	}
	return fmt.Errorf("udp: send to %v: no %s socket open", e, fam)
}

// Offloads reports whether the open sockets send with segmentation offload
// (UDP_SEGMENT) and receive with receive offload (UDP_GRO): each is true if
// some open socket uses it.
func (t *Transport) Offloads() (gso, gro bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, s := range []*socket{t.v4, t.v6} {
		if s != nil {
			gso = gso || s.gsoSegs.Load() > 0
			gro = gro || s.gro
		}
	}
	return gso, gro
}

// ParseEndpoint parses "198.18.0.1:51820" or "[fd00::1]:51820" (no names
// are resolved) and returns the canonical *Endpoint of that address. An
// IPv4-mapped IPv6 address is taken as the IPv4 address; an IPv6 zone may
// be an interface index or the name of an interface of the calling thread's
// network namespace, and is kept as the index.
func (t *Transport) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := parseEndpoint(s, func(name string) (int, error) {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return 0, err
		}
		return ifi.Index, nil
	})
	if err != nil {
		return nil, err
	}
	return t.endpoints.get(ap), nil
}
