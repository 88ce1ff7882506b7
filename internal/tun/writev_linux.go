package tun

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// groWriter writes the packets a coalescer planned, each super-packet
// gathered from the buffers of its segments by one writev(2). One is used by
// one Write at a time (they are pooled per device).
type groWriter struct {
	c       coalescer
	rc      syscall.RawConn
	iov     [][]byte
	vecs    []unix.Iovec
	pkt     []byte // the packet writeOne writes
	n       int
	errno   unix.Errno
	fn      func(fd uintptr) bool // writev of vecs, made once (a closure per call would allocate)
	writeFn func(fd uintptr) bool // write of pkt, likewise
}

func newGROWriter(rc syscall.RawConn) *groWriter {
	w := &groWriter{rc: rc, iov: make([][]byte, 0, offloadBatchSize), vecs: make([]unix.Iovec, 0, offloadBatchSize)}
	w.fn = w.writev
	w.writeFn = w.write1
	return w
}

func (w *groWriter) writev(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.vecs[0])), uintptr(len(w.vecs)))
		if e == unix.EINTR {
			continue
		}
		// A TUN queue takes a packet whole or not at all; it never
		// blocks (EAGAIN) on write.
		w.n, w.errno = int(n), e
		return true
	}
}

// write writes o (planned by w.c over bufs) as one packet.
func (w *groWriter) write(bufs [][]byte, offset int, o *groOut) error {
	w.iov = w.c.segments(w.iov[:0], bufs, offset, o)
	w.vecs = w.vecs[:0]
	for _, b := range w.iov {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		w.vecs = append(w.vecs, v)
	}
	if err := w.rc.Write(w.fn); err != nil {
		return closedError("writev")
	}
	clear(w.iov) // do not keep the batch's buffers reachable
	clear(w.vecs)
	if w.errno != 0 {
		return os.NewSyscallError("writev", w.errno)
	}
	return nil
}
