package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

const tunClonePath = "/dev/net/tun"

// linuxDevice is a Linux TUN interface opened without packet information
// header: every read(2) returns one IP packet, every write(2) takes one.
type linuxDevice struct {
	file *os.File // the TUN queue, non-blocking, driven by the runtime poller
	ctl  *os.File // datagram socket in the device's namespace, for interface ioctls

	events chan Event
	nl     *os.File // rtnetlink socket subscribed to link changes
	done   chan struct{}
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Create creates a TUN interface named name (which may hold a %d for the
// kernel to fill in, like "wg%d") in the calling thread's network namespace
// and, if mtu > 0, sets its MTU. The interface is left down: see SetUp.
// Closing the device removes the interface.
func Create(name string, mtu int) (Device, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun: interface name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open(tunClonePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: open %s: %w", tunClonePath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: interface name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: create %q: %w", name, err)
	}
	return newDevice(fd, mtu)
}

// CreateFromFile makes a Device of an already open TUN queue (for instance
// one inherited from a parent process), which must have been set up with
// IFF_TUN and IFF_NO_PI (the latter cannot be verified). It takes ownership of f: on success f is closed and
// the device holds its own descriptor of the queue, which is switched to
// non-blocking mode. If mtu > 0 the interface's MTU is set. It must be called
// from the network namespace that holds the interface.
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
	if flags := ifr.Uint16(); flags&(unix.IFF_TUN|unix.IFF_TAP) != unix.IFF_TUN || flags&unix.IFF_VNET_HDR != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: %s has flags %#x, want a TUN queue without IFF_VNET_HDR", ifr.Name(), flags)
	}
	dev, err := newDevice(fd, mtu)
	if err != nil {
		return nil, err
	}
	f.Close()
	return dev, nil
}

// newDevice wraps fd, a TUN queue attached to an interface, and takes
// ownership of it (it is closed on error).
func newDevice(fd int, mtu int) (_ Device, err error) {
	t := &linuxDevice{done: make(chan struct{}), events: make(chan Event, 8)}
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

// Read reads one packet into bufs[0][offset:]. BatchSize is 1.
func (t *linuxDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n, err := t.readPacket(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

// Write writes each bufs[i][offset:] as one packet. Packets the kernel
// refuses are skipped; only an error of the device itself stops the batch.
func (t *linuxDevice) Write(bufs [][]byte, offset int) (int, error) {
	for i, buf := range bufs {
		if err := t.writePacket(buf[offset:]); err != nil && !packetError(err) {
			return i, err
		}
	}
	return len(bufs), nil
}

// readPacket and writePacket are the only places packets cross the queue:
// a virtio-net header mode (IFF_VNET_HDR offloads) plugs in here.
func (t *linuxDevice) readPacket(buf []byte) (int, error) {
	return t.file.Read(buf)
}

func (t *linuxDevice) writePacket(pkt []byte) error {
	_, err := t.file.Write(pkt)
	return err
}

// packetError tells whether a write error is about the packet (or the
// interface being down), so that the rest of the batch can still go.
func packetError(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIO) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) ||
		errors.Is(err, unix.EMSGSIZE)
}

func (t *linuxDevice) BatchSize() int { return 1 }

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
