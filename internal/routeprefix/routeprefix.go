// Package routeprefix owns what a route prefix is in Warren: the subnets a
// node advertises and an admin approves, and the two exit routes
// (0.0.0.0/0 and ::/0) that make a node an exit node. It is the one home of
// their syntax (a valid, canonical prefix: no host bits, no zone, no
// IPv4-mapped IPv6), their order and their bound per node, used alike by
// the node (daemon, CLI), the control protocol and the server (store,
// admin API, policy). It depends on nothing but the standard library, so
// the node can use it without linking any server code.
package routeprefix

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Max bounds the advertised or approved routes of one node.
const Max = 64

// The exit routes: a node routing both is an exit node.
var (
	ExitV4 = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	ExitV6 = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
)

// Exit returns the exit routes, 0.0.0.0/0 and ::/0, in a new slice.
func Exit() []netip.Prefix { return []netip.Prefix{ExitV4, ExitV6} }

// IsExit reports whether p is an exit (default) route: 0.0.0.0/0 or ::/0.
func IsExit(p netip.Prefix) bool { return p.IsValid() && p.Bits() == 0 }

// ErrNotCIDR is wrapped by Parse's error for text that is not a prefix.
var ErrNotCIDR = errors.New("not a CIDR prefix (like 192.168.1.0/24)")

// ErrTooMany is wrapped by Normalize's error for more than Max routes.
var ErrTooMany = fmt.Errorf("at most %d routes", Max)

// Check reports why p is not a route prefix: invalid, with a zone, an
// IPv4-mapped IPv6 address, or host bits set. The error names p.
func Check(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return fmt.Errorf("route %s is not a valid prefix", p)
	}
	if p != p.Masked() {
		return fmt.Errorf("route %s has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// Parse reads one route prefix in CIDR notation, such as 192.168.1.0/24,
// and checks it as Check does.
func Parse(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("route %q is %w", s, ErrNotCIDR)
	}
	return p, Check(p)
}

// Normalize checks routes (at most Max, each as Check does) and returns
// them sorted without duplicates; nil for none.
func Normalize(routes []netip.Prefix) ([]netip.Prefix, error) {
	if len(routes) == 0 {
		return nil, nil
	}
	if len(routes) > Max {
		return nil, ErrTooMany
	}
	out := make([]netip.Prefix, 0, len(routes))
	for _, p := range routes {
		if err := Check(p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	Sort(out)
	return slices.Compact(out), nil
}

// Sort sorts prefixes by address, then length.
func Sort(ps []netip.Prefix) {
	slices.SortFunc(ps, Compare)
}

// Compare orders prefixes by address, then length.
func Compare(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
