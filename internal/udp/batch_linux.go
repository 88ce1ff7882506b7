package udp

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/conn"
)

// socket is one bound UDP socket of one address family.
type socket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	port uint16
	v6   bool
	tr   *Transport // for its stats, logger and test hooks

	// gsoSegs is the most datagrams one UDP_SEGMENT message may carry, or
	// 0 while GSO is off: not offered, not wanted, or given up after a
	// failed send (see gsoFailed). gro tells whether UDP_GRO is on; it is
	// set before the socket is shared.
	gsoSegs    atomic.Int32
	gro        bool
	gsoOffOnce sync.Once
}

// receiver is the state of one receive function: the recvmmsg message
// headers, source address slots and control buffers, allocated once, and a
// pre-built callback for the runtime poller, so that receiving allocates
// nothing.
//
// Without UDP_GRO, message i is read straight into the caller's bufs[i].
//
// With UDP_GRO a message may hold several datagrams of one flow back to
// back (all of the segment size the control message gives, the last maybe
// shorter), and each must end up in a buffer of its own. If the caller's
// buffers can each hold a whole coalesced message (the engine's hold 65535
// bytes), messages are read straight into them, bufs[got+j] for message j,
// and then spread out from the last message to the first, so that a
// datagram is copied only if it is not the first of its message or if a
// coalesced message before it in the same read pushed it along: a batch of
// plain datagrams is not copied at all, a run of coalesced ones about once
// each, which is the least the one-datagram-per-buffer contract allows.
// Since only the kernel knows how many datagrams a read brings, a read asks
// for as many messages as fit the free buffers if each brings as many
// datagrams as the largest message of the previous read (expect), and reads
// again without blocking while the socket keeps filling the request and
// buffers are free. The datagrams of a read that still do not fit are
// copied aside (spill) and handed out first by the next call, so nothing is
// lost and nothing is read while some are pending. If the caller's buffers
// are smaller, messages are read into a few internal buffers (big) and all
// datagrams copied out, likewise handed out over as many calls as needed.
type receiver struct {
	mu    sync.Mutex // serialises callers that share one receive function
	sock  *socket
	table *endpointTable
	cache endpointCache

	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	ctrl  []byte                  // groCmsgSpace per message, with UDP_GRO

	// Per message of the last read, with UDP_GRO: datagrams, segment size
	// and first slot in the caller's buffers.
	segs, seg, pos []int
	expect         int      // datagrams per message to plan the next read for
	big            []byte   // bigMsgs internal buffers of groBufMin bytes, made on first use
	bigBufs        [][]byte // big cut into them
	spill          []byte   // datagrams read but not handed out, for pending
	pending        []pendingRun
	pendHead       int

	vlen     int
	nonblock bool // the read is a follow-up: return on EAGAIN, do not wait
	n        int
	errno    syscall.Errno
	recvFn   func(fd uintptr) bool
}

// pendingRun is a run of received datagrams of size seg (the last maybe
// shorter) from ep, waiting to be handed out. data is in spill or big.
type pendingRun struct {
	data []byte
	seg  int
	ep   *Endpoint
}

const (
	// maxReads bounds the recvmmsg calls of one receive call.
	maxReads = 8
	// bigMsgs is how many messages are read at once into internal buffers
	// for callers whose buffers are smaller than groBufMin.
	bigMsgs = 4
	// spillKeep is the largest spill buffer kept for reuse; a larger one,
	// needed only when the traffic changes abruptly, is left to the GC once
	// handed out.
	spillKeep = 256 << 10
)

func newReceiver(sock *socket, table *endpointTable) *receiver {
	r := &receiver{
		sock:   sock,
		table:  table,
		msgs:   make([]unix.Mmsghdr, BatchSize),
		iovs:   make([]unix.Iovec, BatchSize),
		names:  make([]unix.RawSockaddrInet6, BatchSize),
		expect: 1,
	}
	if sock.gro {
		r.ctrl = make([]byte, BatchSize*groCmsgSpace)
		r.segs = make([]int, BatchSize)
		r.seg = make([]int, BatchSize)
		r.pos = make([]int, BatchSize)
		r.pending = make([]pendingRun, 0, BatchSize)
	}
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		if sock.gro {
			h.Control = &r.ctrl[i*groCmsgSpace]
		}
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
	if r.sock.gro {
		return r.receiveGRO(bufs[:n], sizes, eps)
	}
	got, err := r.read(bufs[:n], false)
	if err != nil {
		return 0, err
	}
	for i := 0; i < got; i++ {
		sizes[i] = int(r.msgs[i].Len)
		ep, ok := r.source(i)
		if !ok {
			sizes[i] = 0 // no IP source: cannot happen on an IP socket
		}
		eps[i] = ep
	}
	r.sock.tr.Stats.RecvMessages.Add(uint64(got))
	r.sock.tr.Stats.RecvDatagrams.Add(uint64(got))
	return got, nil
}

// read reads up to len(targets) messages, message j into targets[j], and
// returns how many came. A follow-up read returns 0 rather than wait.
func (r *receiver) read(targets [][]byte, nonblock bool) (int, error) {
	m := len(targets)
	for j := 0; j < m; j++ {
		setIov(&r.iovs[j], targets[j])
		h := &r.msgs[j].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.Flags = 0
		if r.ctrl != nil {
			h.SetControllen(groCmsgSpace)
		}
		r.msgs[j].Len = 0
	}
	r.vlen, r.nonblock = m, nonblock
	err := r.sock.rc.Read(r.recvFn)
	for j := 0; j < m; j++ {
		r.iovs[j].Base = nil // do not keep the caller's buffers reachable
	}
	if err != nil {
		return 0, err // wraps net.ErrClosed after Close
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "recvmmsg", Net: "udp", Err: r.errno}
	}
	return r.n, nil
}

// source is the canonical endpoint of the sender of message j.
func (r *receiver) source(j int) (*Endpoint, bool) {
	ap, ok := addrPortFromSockaddr(&r.names[j])
	return r.cache.get(r.table, ap), ok
}

// receiveGRO is receive on a socket with UDP_GRO; len(bufs) is the batch.
func (r *receiver) receiveGRO(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	n := len(bufs)
	got := r.drain(bufs, sizes, eps, 0)
	direct := true
	for _, b := range bufs[got:] {
		if len(b) < groBufMin {
			direct = false
			break
		}
	}
	var msgs, datagrams, split uint64
	for reads := 0; got < n && reads < maxReads; reads++ {
		m := (n - got) / r.expect
		if m == 0 {
			if got > 0 {
				break
			}
			m = 1
		}
		var targets [][]byte
		if direct {
			targets = bufs[got : got+m]
		} else {
			m = min(m, bigMsgs)
			targets = r.bigBuffers(m)
		}
		k, err := r.read(targets, got > 0)
		if err != nil {
			if got > 0 {
				break // the error comes again on the next call
			}
			return 0, err
		}
		if k == 0 {
			break
		}
		// Count the datagrams of each message and plan the next read.
		total, most := 0, 1
		for j := 0; j < k; j++ {
			l := int(r.msgs[j].Len)
			ctrl := r.ctrl[j*groCmsgSpace : (j+1)*groCmsgSpace]
			seg := groSize(ctrl[:min(int(r.msgs[j].Hdr.Controllen), len(ctrl))])
			c := 1
			if seg > 0 && l > seg {
				c = (l + seg - 1) / seg
				split++
			} else {
				seg = l
			}
			r.segs[j], r.seg[j] = c, seg
			total += c
			most = max(most, c)
		}
		// Plan for the largest expansion seen recently, letting the
		// estimate fall only slowly: GRO message sizes swing from read to
		// read, and an estimate that is too low makes datagrams spill
		// (copied twice) while one that is too high costs only a syscall.
		r.expect = max(most, r.expect-r.expect/8)
		msgs += uint64(k)
		datagrams += uint64(total)
		if direct {
			got = r.place(bufs, sizes, eps, got, k)
		} else {
			for j := 0; j < k; j++ {
				ep, _ := r.source(j)
				r.pending = append(r.pending, pendingRun{data: targets[j][:r.msgs[j].Len], seg: r.seg[j], ep: ep})
			}
			got = r.drain(bufs, sizes, eps, got)
		}
		if k < m {
			break // the socket has nothing more for now
		}
	}
	st := &r.sock.tr.Stats
	st.RecvMessages.Add(msgs)
	st.RecvDatagrams.Add(datagrams)
	if split > 0 {
		st.GROMessages.Add(split)
	}
	return got, nil
}

// bigBuffers returns m internal buffers of groBufMin bytes.
func (r *receiver) bigBuffers(m int) [][]byte {
	if r.big == nil {
		r.big = make([]byte, bigMsgs*groBufMin)
		r.bigBufs = make([][]byte, bigMsgs)
		for i := range r.bigBufs {
			r.bigBufs[i] = r.big[i*groBufMin : (i+1)*groBufMin]
		}
	}
	return r.bigBufs[:m]
}

// place puts the datagrams of the k messages just read into bufs[base+j]
// into bufs[base:], spilling those that do not fit, and returns the number
// of buffers now filled.
func (r *receiver) place(bufs [][]byte, sizes []int, eps []conn.Endpoint, base, k int) int {
	n := len(bufs)
	// Where each message's datagrams go, and which do not fit.
	p, placed := base, k
	for j := 0; j < k; j++ {
		r.pos[j] = p
		if p+r.segs[j] > n {
			r.spillFrom(bufs, base, j, n-p, k)
			placed = j
			if n > p {
				r.segs[j] = n - p
				placed++
			}
			p = n
			break
		}
		p += r.segs[j]
	}
	// From the last message to the first: a message's datagrams go to
	// slots at or after its own, which hold no message yet to be moved.
	for j := placed - 1; j >= 0; j-- {
		src := bufs[base+j][:r.msgs[j].Len]
		ep, ok := r.source(j)
		seg, dst := r.seg[j], r.pos[j]
		for s := r.segs[j] - 1; s >= 0; s-- {
			d := src[s*seg : min((s+1)*seg, len(src))]
			if dst+s != base+j {
				copy(bufs[dst+s], d)
			}
			sizes[dst+s] = len(d)
			if !ok {
				sizes[dst+s] = 0
			}
			eps[dst+s] = ep
		}
	}
	return p
}

// spillFrom copies aside the datagrams of the messages read into
// bufs[base+j] that do not fit: all but the first fit of message first, and
// all of the messages after it up to k.
func (r *receiver) spillFrom(bufs [][]byte, base, first, fit, k int) {
	need := 0
	for j := first; j < k; j++ {
		need += int(r.msgs[j].Len)
	}
	if cap(r.spill)-len(r.spill) < need {
		r.spill = make([]byte, 0, max(need, 64<<10))
	}
	for j := first; j < k; j++ {
		data := bufs[base+j][:r.msgs[j].Len]
		if j == first {
			data = data[min(fit*r.seg[j], len(data)):]
		}
		off := len(r.spill)
		r.spill = append(r.spill, data...)
		ep, _ := r.source(j)
		r.pending = append(r.pending, pendingRun{data: r.spill[off:len(r.spill):len(r.spill)], seg: r.seg[j], ep: ep})
	}
}

// drain hands out pending datagrams into bufs[got:] and returns the number
// of buffers now filled.
func (r *receiver) drain(bufs [][]byte, sizes []int, eps []conn.Endpoint, got int) int {
	for got < len(bufs) && r.pendHead < len(r.pending) {
		p := &r.pending[r.pendHead]
		d := p.data[:min(p.seg, len(p.data))]
		sizes[got] = copy(bufs[got], d)
		eps[got] = p.ep
		got++
		p.data = p.data[len(d):]
		if len(p.data) == 0 {
			*p = pendingRun{}
			r.pendHead++
		}
	}
	if r.pendHead == len(r.pending) && r.pendHead > 0 {
		r.pending, r.pendHead = r.pending[:0], 0
		r.spill = r.spill[:0]
		if cap(r.spill) > spillKeep {
			r.spill = nil
		}
	}
	return got
}

// recv is the poller callback: it returns false to wait for readability.
// With MSG_DONTWAIT the call never sleeps, so it is made as a raw system
// call: the scheduler's hand-off of a P held in a long system call (see
// package tun's rawio_linux.go) costs more than it would save here.
func (r *receiver) recv(fd uintptr) bool {
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.vlen), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			r.n, r.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if r.nonblock {
				r.n, r.errno = 0, 0
				return true
			}
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
//
// With GSO, each run of consecutive datagrams of one size (the last of the
// run maybe shorter), of at most the socket's segment limit and
// maxGSOPayload bytes, goes as one message with a UDP_SEGMENT control
// message giving the size. The message gathers the run from the caller's
// buffers with one iovec per datagram, so nothing is copied in user space:
// iovs holds one iovec per datagram of the chunk being sent, and message m
// points at the segs[m] of them from first[m].
type sender struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	ctrl  []byte // gsoCmsgSpace per message
	first []int
	segs  []int

	vlen   int
	sent   int
	errno  syscall.Errno
	fault  func(size, segs int) syscall.Errno
	sendFn func(fd uintptr) bool
}

func newSender() *sender {
	s := &sender{
		msgs:  make([]unix.Mmsghdr, BatchSize),
		iovs:  make([]unix.Iovec, BatchSize),
		ctrl:  make([]byte, BatchSize*gsoCmsgSpace),
		first: make([]int, BatchSize),
		segs:  make([]int, BatchSize),
	}
	s.sendFn = s.send
	return s
}

// sendTo sends every buffer as one datagram to ep through sock, in chunks
// of at most BatchSize datagrams.
func (s *sender) sendTo(sock *socket, bufs [][]byte, ep *Endpoint) error {
	name, namelen := ep.sockaddr()
	s.fault = sock.tr.sendFault
	for len(bufs) > 0 {
		n := min(len(bufs), len(s.iovs))
		for i := 0; i < n; i++ {
			setIov(&s.iovs[i], bufs[i])
		}
		err := s.sendChunk(sock, bufs[:n], name, namelen)
		for i := 0; i < n; i++ {
			s.iovs[i].Base = nil // do not keep the caller's buffers reachable
		}
		if err != nil {
			return err
		}
		bufs = bufs[n:]
	}
	return nil
}

// sendChunk sends the datagrams of chunk, whose iovecs are set, with one
// sendmmsg call unless GSO has to be given up on the way.
func (s *sender) sendChunk(sock *socket, chunk [][]byte, name *byte, namelen uint32) error {
	from := 0
	for {
		maxSegs := int(sock.gsoSegs.Load())
		m := s.build(chunk, from, maxSegs, name, namelen)
		s.vlen, s.sent, s.errno = m, 0, 0
		err := sock.rc.Write(s.sendFn)
		s.count(&sock.tr.Stats)
		for i := 0; i < m; i++ {
			s.msgs[i].Hdr.Name = nil
		}
		if err != nil {
			return err
		}
		if s.errno == 0 {
			return nil
		}
		// Message s.sent failed; those before it went out.
		if k := s.sent; s.segs[k] > 1 && sock.gsoFailed(s.errno, s.segs[k], maxSegs) {
			from = s.first[k]
			continue
		}
		return &net.OpError{Op: "sendmmsg", Net: "udp", Err: s.errno}
	}
}

// build lays out the messages for the datagrams of chunk from index from
// on and returns their number.
func (s *sender) build(chunk [][]byte, from, maxSegs int, name *byte, namelen uint32) int {
	m := 0
	for i := from; i < len(chunk); m++ {
		size := len(chunk[i])
		k := 1
		if maxSegs > 1 && size > 0 {
			total := size
			for k < maxSegs && i+k < len(chunk) {
				l := len(chunk[i+k])
				if l == 0 || l > size || total+l > maxGSOPayload {
					break
				}
				total += l
				k++
				if l < size {
					break // a shorter datagram ends the run
				}
			}
		}
		h := &s.msgs[m].Hdr
		h.Name, h.Namelen = name, namelen
		h.Iov = &s.iovs[i]
		h.SetIovlen(k)
		if k > 1 {
			c := s.ctrl[m*gsoCmsgSpace : (m+1)*gsoCmsgSpace]
			putGSOCmsg(c, uint16(size))
			h.Control = &c[0]
			h.SetControllen(gsoCmsgSpace)
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		s.msgs[m].Len = 0
		s.first[m], s.segs[m] = i, k
		i += k
	}
	return m
}

// count adds the messages that went out to st.
func (s *sender) count(st *Stats) {
	if s.sent == 0 {
		return
	}
	var datagrams, gso uint64
	for i := 0; i < s.sent; i++ {
		datagrams += uint64(s.segs[i])
		if s.segs[i] > 1 {
			gso++
		}
	}
	st.SentMessages.Add(uint64(s.sent))
	st.SentDatagrams.Add(datagrams)
	if gso > 0 {
		st.GSOMessages.Add(gso)
	}
}

// send is the poller callback: it returns false to wait for writability.
func (s *sender) send(fd uintptr) bool {
	for s.sent < s.vlen {
		vlen := s.vlen - s.sent
		if s.fault != nil {
			// A test simulates failures: one message per call.
			if s.segs[s.sent] > 1 {
				if errno := s.fault(int(s.msgs[s.sent].Hdr.Iov.Len), s.segs[s.sent]); errno != 0 {
					s.errno = errno
					return true
				}
			}
			vlen = 1
		}
		n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&s.msgs[s.sent])), uintptr(vlen), unix.MSG_DONTWAIT, 0, 0)
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
