package tun

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// controlSocket opens a datagram socket for interface ioctls. Its network
// namespace is that of the calling thread, fixed for its whole life.
func controlSocket() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		// A kernel or namespace without IPv4 still has IPv6 sockets.
		var err6 error
		if fd, err6 = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err6 != nil {
			return nil, fmt.Errorf("tun: control socket: %w", err)
		}
	}
	return os.NewFile(uintptr(fd), "tun-ioctl"), nil
}

// ifIoctl runs an interface ioctl on ctl, guarded against a concurrent Close.
func ifIoctl(ctl *os.File, req uint, ifr *unix.Ifreq) error {
	rc, err := ctl.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlIfreq(int(fd), req, ifr)
	}); err != nil {
		return err
	}
	return ioErr
}

func ifIndex(ctl *os.File, name string) (int32, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := ifIoctl(ctl, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("tun: index of %s: %w", name, err)
	}
	return int32(ifr.Uint32()), nil
}

func getFlags(ctl *os.File, name string) (uint16, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := ifIoctl(ctl, unix.SIOCGIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("tun: flags of %s: %w", name, err)
	}
	return ifr.Uint16(), nil
}

func getMTU(ctl *os.File, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := ifIoctl(ctl, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("tun: MTU of %s: %w", name, err)
	}
	return int(int32(ifr.Uint32())), nil
}

func setMTU(ctl *os.File, name string, mtu int) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(mtu))
	if err := ifIoctl(ctl, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("tun: set MTU of %s to %d: %w", name, mtu, err)
	}
	return nil
}

// SetUp brings the interface name, in the calling thread's network
// namespace, administratively up or down (like ip link set NAME up|down).
func SetUp(name string, up bool) error {
	ctl, err := controlSocket()
	if err != nil {
		return err
	}
	defer ctl.Close()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tun: interface name %q: %w", name, err)
	}
	if err := ifIoctl(ctl, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tun: flags of %s: %w", name, err)
	}
	flags := ifr.Uint16()
	if up {
		flags |= unix.IFF_UP
	} else {
		flags &^= unix.IFF_UP
	}
	ifr.SetUint16(flags)
	if err := ifIoctl(ctl, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tun: set %s up=%v: %w", name, up, err)
	}
	return nil
}
