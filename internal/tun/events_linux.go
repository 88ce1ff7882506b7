package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// subscribeLink opens an rtnetlink socket in the calling thread's network
// namespace that receives every link change (RTMGRP_LINK). It is
// non-blocking, so reads go through the runtime poller and Close wakes them.
func subscribeLink() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tun: netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun: netlink bind: %w", err)
	}
	return os.NewFile(uintptr(fd), "rtnetlink"), nil
}

// isUp tells whether interface flags mean packets can flow: administratively
// up and operational (for a TUN, while a queue is attached).
func isUp(flags uint32) bool {
	return flags&unix.IFF_UP != 0 && flags&unix.IFF_RUNNING != 0
}

// watcher turns link notifications about one interface into Events, sending
// one only when the state it reports actually changed.
type watcher struct {
	dev   *linuxDevice
	index int32
	up    bool
	mtu   int
}

func (w *watcher) run() {
	defer w.dev.wg.Done()
	defer close(w.dev.events)
	if w.up && !w.send(EventUp) {
		return
	}
	buf := make([]byte, 1<<16)
	for {
		n, err := w.dev.nl.Read(buf)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				// The socket overran and notifications were lost: resample.
				if !w.resync() {
					return
				}
				continue
			}
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return // closed
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for i := range msgs {
			if !w.handle(&msgs[i]) {
				return
			}
		}
	}
}

// handle applies one netlink message; it returns false once the device is
// closing.
func (w *watcher) handle(m *syscall.NetlinkMessage) bool {
	if m.Header.Type != unix.RTM_NEWLINK && m.Header.Type != unix.RTM_DELLINK {
		return true
	}
	if len(m.Data) < unix.SizeofIfInfomsg {
		return true
	}
	index := int32(binary.NativeEndian.Uint32(m.Data[4:8]))
	if index != w.index {
		return true
	}
	if m.Header.Type == unix.RTM_DELLINK {
		return w.apply(false, w.mtu)
	}
	flags := binary.NativeEndian.Uint32(m.Data[8:12])
	mtu := w.mtu
	if attrs, err := syscall.ParseNetlinkRouteAttr(m); err == nil {
		for _, a := range attrs {
			if a.Attr.Type == unix.IFLA_MTU && len(a.Value) >= 4 {
				mtu = int(binary.NativeEndian.Uint32(a.Value))
			}
		}
	}
	return w.apply(isUp(flags), mtu)
}

// resync samples the interface's state after lost notifications.
func (w *watcher) resync() bool {
	name, err := w.dev.Name()
	if err != nil {
		return true
	}
	flags, err := getFlags(w.dev.ctl, name)
	if err != nil {
		return true
	}
	mtu, err := getMTU(w.dev.ctl, name)
	if err != nil {
		return true
	}
	return w.apply(isUp(uint32(flags)), mtu)
}

// apply records a sampled state and sends the events for what changed.
func (w *watcher) apply(up bool, mtu int) bool {
	if mtu != w.mtu {
		w.mtu = mtu
		if !w.send(EventMTUUpdate) {
			return false
		}
	}
	if up != w.up {
		w.up = up
		ev := EventDown
		if up {
			ev = EventUp
		}
		if !w.send(ev) {
			return false
		}
	}
	return true
}

func (w *watcher) send(ev Event) bool {
	select {
	case w.dev.events <- ev:
		return true
	case <-w.dev.done:
		return false
	}
}
