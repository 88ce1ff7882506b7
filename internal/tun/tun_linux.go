package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const tunClonePath = "/dev/net/tun"

// EnvNoOffload names the environment variable that, set to "1", makes Create
// open plain TUN queues (no virtio-net header, no offloads), and CreateFromFile
// turn the offloads of an inherited queue off.
const EnvNoOffload = "WARREN_TUN_NO_OFFLOAD"

// offloadBatchSize is BatchSize with offloads: enough for a 64 KiB
// super-packet cut at the smallest MTUs in use.
const offloadBatchSize = 128

// Offload flags asked of the kernel with TUNSETOFFLOAD: it may hand us
// packets with a partial checksum, and TCP super-packets; UDP ones too if it
// knows USO (Linux 6.2).
const (
	offloadsTCP = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	offloadsUDP = unix.TUN_F_USO4 | unix.TUN_F_USO6
)

// mode is how packets cross a TUN queue.
type mode struct {
	vnetHdr bool // each packet behind a virtio-net header (IFF_VNET_HDR)
	tso     bool // TCP offloads on: super-packets read, TCP segments coalesced on write
	uso     bool // UDP offloads on too: UDP datagrams coalesced on write
}

// linuxDevice is a Linux TUN interface opened without packet information
// header. In plain mode every read(2) returns one IP packet and every
// write(2) takes one; in offload mode (IFF_VNET_HDR) each carries a
// virtio-net header in front and may be a super-packet of many segments.
type linuxDevice struct {
	file *os.File // the TUN queue, non-blocking, driven by the runtime poller
	ctl  *os.File // datagram socket in the device's namespace, for interface ioctls
	mode mode

	readMu  sync.Mutex // serializes Reads through reader and readBuf
	reader  *rawReader
	readBuf []byte // offload mode: a virtio-net header and a super-packet
	held    int    // bytes of readBuf read but not yet returned (they did not fit)
	// keeping tells waiters, who do not hold readMu, that held > 0: a
	// packet is kept in readBuf that no readiness of the queue will
	// announce (see readLocked). waiters counts them.
	keeping atomic.Bool
	waiters atomic.Int32
	readyFn func(fd uintptr) bool // t.ready, made once
	gro     sync.Pool             // of *groWriter, for concurrent Writes

	events chan Event
	nl     *os.File // rtnetlink socket subscribed to link changes
	done   chan struct{}
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	stats Stats
}

// Stats implements StatsDevice.
func (t *linuxDevice) Stats() *Stats { return &t.stats }

// Create creates a TUN interface named name (which may hold a %d for the
// kernel to fill in, like "wg%d") in the calling thread's network namespace
// and, if mtu > 0, sets its MTU. The interface is left down: see SetUp.
// Closing the device removes the interface.
//
// The queue is opened in offload mode (virtio-net headers, checksum and
// segmentation offloads, coalescing on write, BatchSize 128) when the kernel
// supports it and WARREN_TUN_NO_OFFLOAD is not "1", in plain mode
// (BatchSize 1) otherwise.
func Create(name string, mtu int) (Device, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun: interface name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	if os.Getenv(EnvNoOffload) != "1" {
		if fd, err := createQueue(name, unix.IFF_VNET_HDR); err == nil {
			if m, ok := enableOffloads(fd); ok {
				return newDevice(fd, mtu, m, false)
			}
			// Closing the queue removes the interface, to be created
			// again in plain mode.
			unix.Close(fd)
		}
	}
	fd, err := createQueue(name, 0)
	if err != nil {
		return nil, err
	}
	return newDevice(fd, mtu, mode{}, false)
}

// createQueue opens a TUN queue without packet information header, with
// the extra flags, attached to the interface name.
func createQueue(name string, flags uint16) (int, error) {
	fd, err := unix.Open(tunClonePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("tun: open %s: %w", tunClonePath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun: interface name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun: create %q: %w", name, err)
	}
	return fd, nil
}

// enableOffloads sets up a queue opened with IFF_VNET_HDR: headers of
// struct virtio_net_hdr's size, and the TCP offloads, with the UDP ones if
// the kernel takes them. It reports false if the kernel refuses the header
// size or the TCP offloads.
func enableOffloads(fd int) (mode, bool) {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, virtioNetHdrLen); err != nil {
		return mode{}, false
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloadsTCP|offloadsUDP); err == nil {
		return mode{vnetHdr: true, tso: true, uso: true}, true
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloadsTCP); err == nil {
		return mode{vnetHdr: true, tso: true}, true
	}
	return mode{}, false
}

// CreateFromFile makes a Device of an already open TUN queue (for instance
// one inherited from a parent process), which must have been set up with
// IFF_TUN and IFF_NO_PI (the latter cannot be verified). It takes ownership
// of f: on success f is closed and the device holds its own descriptor of the
// queue, which is switched to non-blocking mode. If mtu > 0 the interface's
// MTU is set. It must be called from the network namespace that holds the
// interface.
//
// A queue opened with IFF_VNET_HDR is used in offload mode, its offloads set
// as Create would (or turned off, with WARREN_TUN_NO_OFFLOAD=1: packets still
// carry the header, BatchSize is 1); one without, in plain mode.
func CreateFromFile(f *os.File, mtu int) (Device, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(raw uintptr) {
		fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("tun: dup: %w", dupErr)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %s is not a TUN queue: %w", f.Name(), err)
	}
	// IFF_NO_PI cannot be checked: TUNGETIFF reports IFF_NOFILTER, the same
	// bit, for every TUN queue without a socket filter.
	flags := ifr.Uint16()
	if flags&(unix.IFF_TUN|unix.IFF_TAP) != unix.IFF_TUN {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %s has flags %#x, want a TUN queue", ifr.Name(), flags)
	}
	var m mode
	if flags&unix.IFF_VNET_HDR != 0 {
		var ok bool
		if os.Getenv(EnvNoOffload) != "1" {
			m, ok = enableOffloads(fd)
		}
		if !ok {
			// The header stays, whatever its size was: make it ours, and
			// keep the kernel from sending super-packets.
			if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, virtioNetHdrLen); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("tun: %s: TUNSETVNETHDRSZ: %w", ifr.Name(), err)
			}
			_ = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0)
			m = mode{vnetHdr: true}
		}
	}
	// The open file is shared with whoever passed it, who may turn
	// O_NONBLOCK off again: reads then go through the scheduler.
	dev, err := newDevice(fd, mtu, m, true)
	if err != nil {
		return nil, err
	}
	f.Close()
	return dev, nil
}

// newDevice wraps fd, a TUN queue attached to an interface, and takes
// ownership of it (it is closed on error). shared tells that the open file
// came from another process (see newRawReader).
func newDevice(fd int, mtu int, m mode, shared bool) (_ Device, err error) {
	t := &linuxDevice{done: make(chan struct{}), events: make(chan Event, 8), mode: m}
	if m.vnetHdr {
		t.readBuf = make([]byte, maxReadLen)
	}
	defer func() {
		if err != nil {
			if t.file != nil {
				t.file.Close()
			} else {
				unix.Close(fd)
			}
			if t.ctl != nil {
				t.ctl.Close()
			}
			if t.nl != nil {
				t.nl.Close()
			}
		}
	}()
	if err := checkSameNetns(fd); err != nil {
		return nil, err
	}
	// With O_NONBLOCK set, os.NewFile registers the descriptor with the
	// runtime poller, so a blocked Read parks a goroutine, not a thread,
	// and Close wakes it.
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("tun: set non-blocking: %w", err)
	}
	t.file = os.NewFile(uintptr(fd), tunClonePath)
	rc, err := t.file.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tun: %w", err)
	}
	t.reader = newRawReader(rc, !shared)
	t.readyFn = t.ready
	t.gro.New = func() any { return newGROWriter(rc) }
	if t.ctl, err = controlSocket(); err != nil {
		return nil, err
	}
	name, err := t.Name()
	if err != nil {
		return nil, err
	}
	index, err := ifIndex(t.ctl, name)
	if err != nil {
		return nil, err
	}
	if mtu > 0 {
		if err := setMTU(t.ctl, name, mtu); err != nil {
			return nil, err
		}
	}
	// Subscribe before sampling the state, so no change falls in between.
	if t.nl, err = subscribeLink(); err != nil {
		return nil, err
	}
	flags, err := getFlags(t.ctl, name)
	if err != nil {
		return nil, err
	}
	curMTU, err := getMTU(t.ctl, name)
	if err != nil {
		return nil, err
	}
	w := &watcher{dev: t, index: index, up: isUp(uint32(flags)), mtu: curMTU}
	t.wg.Add(1)
	go w.run()
	return t, nil
}

// checkSameNetns refuses a TUN queue whose interface lives in another network
// namespace than the calling thread: interface ioctls go by name, and would
// reach an unrelated interface of the same name. Kernels without
// TUNGETDEVNETNS (before 5.2) are not checked.
func checkSameNetns(fd int) error {
	nsfd, err := unix.IoctlRetInt(fd, unix.TUNGETDEVNETNS)
	if err != nil {
		return nil
	}
	defer unix.Close(nsfd)
	var dev, self unix.Stat_t
	if err := unix.Fstat(nsfd, &dev); err != nil {
		return nil
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return nil
	}
	if dev.Dev != self.Dev || dev.Ino != self.Ino {
		return errors.New("tun: the interface is in another network namespace than the calling thread")
	}
	return nil
}

// Read reads one packet from the queue. In plain mode it is read into
// bufs[0][offset:]. In offload mode it is read with its virtio-net header
// into the device's buffer, and the packets it stands for are written to
// bufs[i][offset:] (see gsoSplit): one, its checksum completed if the kernel
// left it partial, or the segments of a super-packet. Packets already queued
// behind the first are read and returned too while bufs have room (one that
// does not fit is kept for the next Read). A super-packet of more segments
// than len(bufs) is dropped with ErrTooManySegments, a malformed one with
// ErrBadOffload; the packets before it in the batch are returned with the
// error.
func (t *linuxDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	t.readMu.Lock()
	defer t.readMu.Unlock()
	for {
		n, err := t.readLocked(bufs, sizes, offset)
		if n > 0 || err != nil || !t.reader.raw {
			return n, err
		}
		// Nothing is queued: wait without the lock, so that a TryRead
		// meanwhile is not turned away.
		t.readMu.Unlock()
		err = t.wait()
		t.readMu.Lock()
		if err != nil {
			return 0, err
		}
	}
}

// TryRead implements Poller: Read without waiting. A queue that is not read
// with raw system calls (see newRawReader) is never tried.
func (t *linuxDevice) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || !t.reader.raw || !t.readMu.TryLock() {
		return 0, nil
	}
	defer t.readMu.Unlock()
	return t.readLocked(bufs, sizes, offset)
}

// CanPoll implements Poller: a queue that is not read raw (see
// newRawReader) is never tried, so it must be read with Read.
func (t *linuxDevice) CanPoll() bool { return t.reader.raw }

// WaitRead implements Poller.
func (t *linuxDevice) WaitRead() error {
	if !t.reader.raw {
		// Never tried, so never waited for: Read does both.
		return nil
	}
	return t.wait()
}

// wait waits, without readMu, until the queue is readable or a packet is
// kept (see readLocked).
func (t *linuxDevice) wait() error {
	t.waiters.Add(1)
	err := t.reader.wait(t.readyFn)
	t.waiters.Add(-1)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The wake-up of readLocked: clear it for the next wait. A kept
		// packet the caller's next read will find.
		t.file.SetReadDeadline(time.Time{})
		return nil
	}
	if err != nil {
		return closedError("read")
	}
	return nil
}

// ready is the poller callback of a wait: a packet is kept from an earlier
// read, or the queue is readable.
func (t *linuxDevice) ready(fd uintptr) bool {
	return t.keeping.Load() || queueReady(fd)
}

// readLocked is Read for a caller holding readMu, without waiting on a raw
// queue: it returns 0 packets and no error when none is queued. (A queue
// not read raw is waited on in the kernel.)
func (t *linuxDevice) readLocked(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.readQueued(bufs, sizes, offset)
	keep := t.held > 0
	if t.keeping.Load() != keep {
		t.keeping.Store(keep)
	}
	// A kept packet is in no queue, so nothing wakes a reader that waits
	// meanwhile: the poller's readiness is re-checked against the queue
	// when it is collected, and the queue may well be empty now. Wake
	// such a reader through its deadline (a waiter that comes later sees
	// keeping first).
	if keep && t.waiters.Load() > 0 {
		t.file.SetReadDeadline(aLongTimeAgo)
	}
	return n, err
}

// aLongTimeAgo is a read deadline that has passed: setting it wakes the
// goroutines waiting to read.
var aLongTimeAgo = time.Unix(1, 0)

// readQueued is readLocked less the update of keeping.
func (t *linuxDevice) readQueued(bufs [][]byte, sizes []int, offset int) (int, error) {
	if !t.mode.vnetHdr {
		n, err := t.reader.next(bufs[0][offset:])
		if n == 0 || err != nil {
			return 0, err
		}
		sizes[0] = n
		return 1, nil
	}
	if t.held == 0 {
		n, err := t.reader.next(t.readBuf)
		if n == 0 || err != nil {
			return 0, err
		}
		t.held = n
		t.stats.Reads.Add(1)
	}
	// Whatever else the queue already holds is read too, while bufs have
	// room: one wake-up and one send for several packets (the ACKs a
	// receiver owes, the super-packets a busy sender has queued).
	k := 0
	for {
		n := t.held
		var hdr virtioNetHdr
		var got int
		var err error
		if n < virtioNetHdrLen {
			err = ErrBadOffload
		} else {
			hdr.decode(t.readBuf)
			got, err = gsoSplit(t.readBuf[virtioNetHdrLen:n], hdr, bufs[k:], sizes[k:], offset)
		}
		if err == ErrTooManySegments && k > 0 {
			break // held for the next Read, whose buffers are all free
		}
		t.held = 0
		k += got
		if err != nil {
			t.stats.ReadPackets.Add(uint64(k))
			return k, err
		}
		if k == len(bufs) {
			break
		}
		if t.held, _ = t.reader.tryRead(t.readBuf); t.held == 0 {
			break
		}
		t.stats.Reads.Add(1)
	}
	t.stats.ReadPackets.Add(uint64(k))
	return k, nil
}

// Write writes the packets bufs[i][offset:]. Packets the kernel refuses are
// skipped; only an error of the device itself stops the batch.
//
// In offload mode (offset >= 10 is then required) the segments of each TCP
// flow (and UDP flow, if the kernel does USO) are first coalesced into
// super-packets (see coalesce): the headers of the flow's first packet of
// the batch are rewritten for the whole, and each super-packet is written by
// one writev(2) that gathers the other segments' payloads from their own
// buffers. A packet's virtio-net header is written in the 10 bytes in front
// of it. A super-packet the kernel refuses is written again
// as the packets it was made of.
func (t *linuxDevice) Write(bufs [][]byte, offset int) (int, error) {
	if !t.mode.vnetHdr {
		w := t.gro.Get().(*groWriter)
		defer t.gro.Put(w)
		for i, buf := range bufs {
			if err := w.writeOne(buf[offset:]); err != nil && !packetError(err) {
				return i, err
			}
		}
		return len(bufs), nil
	}
	if offset < virtioNetHdrLen {
		return 0, fmt.Errorf("tun: offset %d leaves no room for the %d-byte virtio-net header", offset, virtioNetHdrLen)
	}
	for _, buf := range bufs {
		if len(buf) < offset {
			return 0, fmt.Errorf("tun: buffer of %d bytes shorter than offset %d", len(buf), offset)
		}
	}
	w := t.gro.Get().(*groWriter)
	defer t.gro.Put(w)
	c := &w.c
	outs := c.coalesce(bufs, offset, t.mode.tso, t.mode.uso)
	t.stats.WritePackets.Add(uint64(len(bufs)))
	t.stats.Writes.Add(uint64(len(outs)))
	for k := range outs {
		o := &outs[k]
		var err error
		if o.segs == 1 {
			err = w.writeOne(bufs[o.idx][offset-virtioNetHdrLen : offset+o.length])
		} else {
			err = w.write(bufs, offset, o)
		}
		if err != nil && o.segs > 1 && packetError(err) {
			c.unmerge(bufs, offset, o)
			err = w.writeOne(bufs[o.idx][offset-virtioNetHdrLen : offset+o.length])
			for j := o.first; j >= 0 && (err == nil || packetError(err)); j = c.next[j] {
				err = w.writeOne(bufs[j][offset-virtioNetHdrLen:])
			}
		}
		if err != nil && !packetError(err) {
			return o.idx, err
		}
	}
	return len(bufs), nil
}

// packetError tells whether a write error is about the packet (or the
// interface being down), so that the rest of the batch can still go.
func packetError(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIO) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) ||
		errors.Is(err, unix.EMSGSIZE)
}

// BatchSize is 128 in offload mode, 1 otherwise.
func (t *linuxDevice) BatchSize() int {
	if t.mode.tso {
		return offloadBatchSize
	}
	return 1
}

// Name returns the interface's current name (it follows renames).
func (t *linuxDevice) Name() (string, error) {
	rc, err := t.file.SyscallConn()
	if err != nil {
		return "", fmt.Errorf("tun: %w", err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr)
	}); err != nil {
		return "", fmt.Errorf("tun: %w", err)
	}
	if ioErr != nil {
		return "", fmt.Errorf("tun: TUNGETIFF: %w", ioErr)
	}
	return ifr.Name(), nil
}

func (t *linuxDevice) MTU() (int, error) {
	name, err := t.Name()
	if err != nil {
		return 0, err
	}
	return getMTU(t.ctl, name)
}

func (t *linuxDevice) Events() <-chan Event { return t.events }

// Close closes the queue (removing the interface unless it is persistent),
// wakes blocked Reads and stops the event watcher, whose channel it closes.
func (t *linuxDevice) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		err1 := t.file.Close()
		err2 := t.nl.Close()
		t.wg.Wait()
		err3 := t.ctl.Close()
		t.closeErr = errors.Join(err1, err2, err3)
	})
	return t.closeErr
}
