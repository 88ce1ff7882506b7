package tun

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The queue is non-blocking, so its read(2), write(2) and writev(2) never
// sleep in the kernel: they are made as raw system calls, inside the runtime
// poller's RawConn callbacks (which park the goroutine on EAGAIN). A call
// made through syscall.Syscall tells the scheduler it may block; when one
// lasts longer than the runtime monitor's tick (a TUN write runs the
// receiving TCP stack, tens of microseconds) the monitor hands the P to
// another thread, and the caller has to win it back when the call returns.
// On one or two CPUs that hand-off, and the monitor waking every 20 µs to
// do it, cost more than the calls themselves.

// rawReader reads one packet from the queue into buf.
type rawReader struct {
	rc    syscall.RawConn
	raw   bool // read(2) as a raw system call (see newRawReader)
	buf   []byte
	n     int
	errno unix.Errno
	fn    func(fd uintptr) bool // r.read, made once (a closure per call would allocate)
	tryFn func(fd uintptr)      // r.try, likewise
}

// newRawReader reads through rc, with raw system calls if raw is set. A
// raw read(2) is only safe while the queue is non-blocking: one that
// sleeps would hold the P (with GOMAXPROCS=1, the whole process) until a
// packet came. O_NONBLOCK belongs to the open file, not to our descriptor,
// so a queue opened by another process and passed to us (CreateFromFile)
// could be switched back to blocking by it; its reads are not raw. Writes
// are raw either way: a TUN queue never waits to take a packet.
func newRawReader(rc syscall.RawConn, raw bool) *rawReader {
	r := &rawReader{rc: rc, raw: raw}
	r.fn = r.read
	r.tryFn = r.try
	return r
}

func (r *rawReader) read(fd uintptr) bool {
	for {
		var n uintptr
		var e unix.Errno
		if r.raw {
			n, _, e = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.buf))), uintptr(len(r.buf)))
		} else {
			n, _, e = unix.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.buf))), uintptr(len(r.buf)))
		}
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// Read reads one packet into b, waiting for one in the runtime poller.
func (r *rawReader) Read(b []byte) (int, error) {
	r.buf = b
	err := r.rc.Read(r.fn)
	return r.result(err)
}

// tryRead reads one packet into b if the queue holds one, without waiting:
// it returns its length, or 0 if there was none.
func (r *rawReader) tryRead(b []byte) (int, error) {
	r.buf, r.n, r.errno = b, 0, 0
	err := r.rc.Control(r.tryFn)
	return r.result(err)
}

// result ends a read through the poller, which returned err.
func (r *rawReader) result(err error) (int, error) {
	r.buf = nil
	if err != nil {
		return 0, closedError("read")
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("read", r.errno)
	}
	return r.n, nil
}

func (r *rawReader) try(fd uintptr) {
	if !r.read(fd) {
		r.n, r.errno = 0, 0 // EAGAIN: nothing queued
	}
}

// next reads one packet into b: without waiting (0 if none is queued) if
// the queue is read raw, else waiting for one in the kernel.
func (r *rawReader) next(b []byte) (int, error) {
	if r.raw {
		return r.tryRead(b)
	}
	return r.Read(b)
}

// wait waits in the runtime poller until ready, its callback, returns true:
// queueReady, or a variant of it that also knows of a packet read earlier
// and kept. It reads nothing and keeps no state, so several goroutines may
// wait at once. It returns the poller's error: the file was closed, or its
// read deadline passed.
func (r *rawReader) wait(ready func(fd uintptr) bool) error {
	return r.rc.Read(ready)
}

// queueReady is wait's poller callback: whether poll(2) finds the queue
// readable or in error right now.
func queueReady(fd uintptr) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	var zero unix.Timespec
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return e != 0 || (n > 0 && fds[0].Revents != 0)
	}
}

// writeOne writes pkt as one packet (its virtio-net header in front in
// offload mode).
func (w *groWriter) writeOne(pkt []byte) error {
	w.pkt = pkt
	err := w.rc.Write(w.writeFn)
	w.pkt = nil
	if err != nil {
		return closedError("write")
	}
	if w.errno != 0 {
		return os.NewSyscallError("write", w.errno)
	}
	return nil
}

func (w *groWriter) write1(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(w.pkt))), uintptr(len(w.pkt)))
		if e == unix.EINTR {
			continue
		}
		w.n, w.errno = int(n), e
		return true
	}
}

// closedError maps an error of the poller itself (not of the system call),
// which for a file without deadlines means it was closed, to os.ErrClosed,
// as os.File's own methods do.
func closedError(op string) error {
	return &os.PathError{Op: op, Path: tunClonePath, Err: os.ErrClosed}
}
