// Package netcfg configures the operating system side of a node's tunnel
// interface over netlink: it brings the link up, sets its MTU, and keeps its
// addresses and routes equal to what the network map asks for. It owns only
// what it added: Set reconciles the interface's addresses and the routes
// through the interface against the desired sets, adding what is missing and
// removing what it installed earlier and is no longer wanted, and never
// touches other interfaces, other routes or the host's resolver.
package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link is one tunnel interface under management.
type Link struct {
	name string

	mu     sync.Mutex
	addrs  map[netip.Prefix]bool // addresses we installed
	routes map[netip.Prefix]bool // routes we installed
}

// New returns a manager for the interface named name. The interface must
// exist when Set is called.
func New(name string) *Link {
	return &Link{name: name, addrs: map[netip.Prefix]bool{}, routes: map[netip.Prefix]bool{}}
}

// Name is the interface name.
func (l *Link) Name() string { return l.name }

func (l *Link) link() (netlink.Link, error) {
	lk, err := netlink.LinkByName(l.name)
	if err != nil {
		return nil, fmt.Errorf("netcfg: interface %s: %w", l.name, err)
	}
	return lk, nil
}

// Up sets the MTU (when mtu > 0) and brings the interface up.
func (l *Link) Up(mtu int) error {
	lk, err := l.link()
	if err != nil {
		return err
	}
	if mtu > 0 && lk.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(lk, mtu); err != nil {
			return fmt.Errorf("netcfg: set MTU %d on %s: %w", mtu, l.name, err)
		}
	}
	if err := netlink.LinkSetUp(lk); err != nil {
		return fmt.Errorf("netcfg: bring %s up: %w", l.name, err)
	}
	return nil
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Set makes the interface carry exactly addrs (host prefixes such as
// 100.64.0.1/32) and routes through it exactly routes (prefixes are
// masked; those covered by an address of the same length are skipped, as
// the kernel already routes them). Addresses and routes present on the
// interface that Set did not install are left alone. Set applies as much
// as it can and returns the first error.
func (l *Link) Set(addrs, routes []netip.Prefix) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk, err := l.link()
	if err != nil {
		return err
	}
	var errs []error

	wantA := map[netip.Prefix]bool{}
	for _, a := range addrs {
		wantA[a] = true
	}
	have := map[netip.Prefix]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		list, err := netlink.AddrList(lk, fam)
		if err != nil {
			return fmt.Errorf("netcfg: list addresses of %s: %w", l.name, err)
		}
		for _, a := range list {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			have[netip.PrefixFrom(ip.Unmap(), ones)] = true
		}
	}
	for a := range l.addrs {
		if !wantA[a] {
			if have[a] {
				if err := netlink.AddrDel(lk, &netlink.Addr{IPNet: toIPNet(a)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
					errs = append(errs, fmt.Errorf("netcfg: remove address %s from %s: %w", a, l.name, err))
					continue
				}
			}
			delete(l.addrs, a)
		}
	}
	for _, a := range sortedKeys(wantA) {
		if !have[a] {
			addr := &netlink.Addr{IPNet: toIPNet(a)}
			if a.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD // usable at once, no duplicate detection wait
			}
			if err := netlink.AddrAdd(lk, addr); err != nil && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("netcfg: add address %s to %s: %w", a, l.name, err))
				continue
			}
		}
		l.addrs[a] = true
	}

	wantR := map[netip.Prefix]bool{}
	for _, r := range routes {
		r = r.Masked()
		if wantA[r] {
			continue
		}
		wantR[r] = true
	}
	for r := range l.routes {
		if !wantR[r] {
			err := netlink.RouteDel(l.route(lk, r))
			if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("netcfg: remove route %s via %s: %w", r, l.name, err))
				continue
			}
			delete(l.routes, r)
		}
	}
	for _, r := range sortedKeys(wantR) {
		if l.routes[r] {
			continue
		}
		if err := netlink.RouteReplace(l.route(lk, r)); err != nil {
			errs = append(errs, fmt.Errorf("netcfg: add route %s via %s: %w", r, l.name, err))
			continue
		}
		l.routes[r] = true
	}
	return errors.Join(errs...)
}

func (l *Link) route(lk netlink.Link, p netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: lk.Attrs().Index, Dst: toIPNet(p), Scope: netlink.SCOPE_LINK}
}

// Clear removes every address and route Set installed. The interface itself
// is left to its owner (closing a TUN device removes it).
func (l *Link) Clear() error { return l.Set(nil, nil) }

func sortedKeys(m map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}
