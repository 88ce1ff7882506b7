package udp

import (
	"net"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"warren/internal/conn"
)

// socket is one bound UDP socket of one address family.
type socket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	port uint16
}

// receiver is the state of one receive function: the recvmmsg message
// headers and source address slots, allocated once, and a pre-built
// callback for the runtime poller, so that receiving allocates nothing.
type receiver struct {
	mu    sync.Mutex // serialises callers that share one receive function
	sock  *socket
	table *endpointTable
	cache endpointCache

	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	// A later UDP_GRO mode adds per-message control buffers here and splits
	// coalesced datagrams after the call.

	vlen   int
	n      int
	errno  syscall.Errno
	recvFn func(fd uintptr) bool
}

func newReceiver(sock *socket, table *endpointTable) *receiver {
	r := &receiver{
		sock:  sock,
		table: table,
		msgs:  make([]unix.Mmsghdr, BatchSize),
		iovs:  make([]unix.Iovec, BatchSize),
		names: make([]unix.RawSockaddrInet6, BatchSize),
	}
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.recvFn = r.recv
	return r
}

// receive implements conn.ReceiveFunc.
func (r *receiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(bufs), len(sizes), len(eps), len(r.msgs))
	if n == 0 {
		return 0, nil
	}
	for i := 0; i < n; i++ {
		setIov(&r.iovs[i], bufs[i])
		h := &r.msgs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.Flags = 0
		r.msgs[i].Len = 0
	}
	r.vlen = n
	err := r.sock.rc.Read(r.recvFn)
	for i := 0; i < n; i++ {
		r.iovs[i].Base = nil // do not keep the caller's buffers reachable
	}
	if err != nil {
		return 0, err // wraps net.ErrClosed after Close
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "recvmmsg", Net: "udp", Err: r.errno}
	}
	for i := 0; i < r.n; i++ {
		sizes[i] = int(r.msgs[i].Len)
		ap, ok := addrPortFromSockaddr(&r.names[i])
		if !ok {
			sizes[i] = 0 // no IP source: cannot happen on an IP socket
		}
		eps[i] = r.cache.get(r.table, ap)
	}
	return r.n, nil
}

// recv is the poller callback: it returns false to wait for readability.
func (r *receiver) recv(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.vlen), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			r.n, r.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.n, r.errno = 0, errno
			return true
		}
	}
}

func setIov(iov *unix.Iovec, b []byte) {
	if len(b) == 0 {
		iov.Base = nil
		iov.SetLen(0)
		return
	}
	iov.Base = &b[0]
	iov.SetLen(len(b))
}

// sender is the state of one sendmmsg batch. Senders are pooled per
// Transport: concurrent Sends each take one.
type sender struct {
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	// A later UDP_SEGMENT (GSO) mode coalesces runs of equal-sized
	// datagrams of the batch into one message with a control message here.

	vlen   int
	sent   int
	errno  syscall.Errno
	sendFn func(fd uintptr) bool
}

func newSender() *sender {
	s := &sender{
		msgs: make([]unix.Mmsghdr, BatchSize),
		iovs: make([]unix.Iovec, BatchSize),
	}
	for i := range s.msgs {
		s.msgs[i].Hdr.Iov = &s.iovs[i]
		s.msgs[i].Hdr.SetIovlen(1)
	}
	s.sendFn = s.send
	return s
}

// sendTo sends every buffer as one datagram to ep through sock, in batches.
func (s *sender) sendTo(sock *socket, bufs [][]byte, ep *Endpoint) error {
	name, namelen := ep.sockaddr()
	for len(bufs) > 0 {
		n := min(len(bufs), len(s.msgs))
		for i := 0; i < n; i++ {
			setIov(&s.iovs[i], bufs[i])
			h := &s.msgs[i].Hdr
			h.Name = name
			h.Namelen = namelen
			s.msgs[i].Len = 0
		}
		s.vlen, s.sent, s.errno = n, 0, 0
		err := sock.rc.Write(s.sendFn)
		for i := 0; i < n; i++ {
			s.iovs[i].Base = nil
			s.msgs[i].Hdr.Name = nil
		}
		if err != nil {
			return err
		}
		if s.errno != 0 {
			return &net.OpError{Op: "sendmmsg", Net: "udp", Err: s.errno}
		}
		bufs = bufs[n:]
	}
	return nil
}

// send is the poller callback: it returns false to wait for writability.
func (s *sender) send(fd uintptr) bool {
	for s.sent < s.vlen {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&s.msgs[s.sent])), uintptr(s.vlen-s.sent), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			s.sent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			s.errno = errno
			return true
		}
	}
	return true
}
