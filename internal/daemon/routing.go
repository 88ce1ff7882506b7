package daemon

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/warrenmesh/warren/internal/routeprefix"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Tunnel routes (subnet routes of peers with --accept-routes, and the
// default routes of the exit node) go into their own routing table, with
// policy rules in front of the main table:
//
//	5210: fwmark RouteMark lookup main              the daemon's own sockets
//	5230: lookup main suppress_prefixlength 0       only with --exit-node-allow-lan
//	5250: lookup 52                                 the tunnel routes
//
// The daemon marks every socket that must stay on the underlay (the
// WireGuard/path-layer UDP socket, control and relay TCP connections) with
// RouteMark, so an exit node's default route never captures the tunnel's
// own packets. When an exit node is asked for but none is usable, table
// 52 holds unreachable default routes instead (fail closed: internet
// traffic is refused, not sent out directly), with the peers' own
// prefixes in front of them so the tunnel keeps working; the marked
// sockets still reach the server, relays and peers through the main
// table. With --exit-node-allow-lan the main table's more specific
// routes (the LAN) win over table 52; its default route does not
// (suppress_prefixlength 0). The rules exist only while table 52 has
// routes. They are removed when the node goes down or the daemon exits,
// and any left by a crashed daemon are removed at start.
const (
	RouteTable = 52
	RouteMark  = 0x5752 // "WR"

	prioMark  = 5210
	prioLAN   = 5230
	prioTable = 5250
)

var linkLocal = map[bool]netip.Prefix{false: netip.MustParsePrefix("169.254.0.0/16"), true: netip.MustParsePrefix("fe80::/10")}

// markControl sets RouteMark on a socket before it connects
// (net.Dialer.Control).
func markControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, RouteMark)
	}); err != nil {
		return err
	}
	return serr
}

// tunnelRoutes owns table 52 and the rules in front of it.
type tunnelRoutes struct {
	ifname string
	routes map[netip.Prefix]uint8 // installed in table 52: RTN_UNICAST (via the tunnel) or RTN_UNREACHABLE
	throws map[netip.Prefix]bool  // throw routes installed in table 52
	rules  string                 // "" none, "table", "table+lan"
}

func newTunnelRoutes(ifname string) *tunnelRoutes {
	return &tunnelRoutes{ifname: ifname, routes: map[netip.Prefix]uint8{}, throws: map[netip.Prefix]bool{}}
}

func toNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Set makes table 52 hold exactly routes through the tunnel interface
// (with src4/src6 as their source addresses when valid) and unreachable
// routes for unreachable (an exit node asked for but unusable: fail
// closed), and the rules match: none without routes, the LAN rule only
// with allowLAN. A prefix in both is unreachable.
func (t *tunnelRoutes) Set(routes, unreachable []netip.Prefix, allowLAN bool, src4, src6 netip.Addr) error {
	var errs []error
	want := map[netip.Prefix]uint8{}
	for _, r := range routes {
		want[r.Masked()] = unix.RTN_UNICAST
	}
	for _, r := range unreachable {
		want[r.Masked()] = unix.RTN_UNREACHABLE
	}
	var lk netlink.Link
	if slices.Contains(slices.Collect(maps.Values(want)), unix.RTN_UNICAST) {
		var err error
		if lk, err = netlink.LinkByName(t.ifname); err != nil {
			return fmt.Errorf("routes: interface %s: %w", t.ifname, err)
		}
	}
	for r, typ := range t.routes {
		if _, ok := want[r]; !ok {
			err := netlink.RouteDel(&netlink.Route{Dst: toNet(r), Table: RouteTable, Type: int(typ)})
			if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("routes: remove %s from table %d: %w", r, RouteTable, err))
				continue
			}
			delete(t.routes, r)
		}
	}
	keys := make([]netip.Prefix, 0, len(want))
	for r := range want {
		keys = append(keys, r)
	}
	slices.SortFunc(keys, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, r := range keys {
		typ := want[r]
		if have, ok := t.routes[r]; ok && have == typ {
			continue
		}
		rt := &netlink.Route{Dst: toNet(r), Table: RouteTable, Type: int(typ)}
		if typ == unix.RTN_UNICAST {
			rt.LinkIndex, rt.Scope = lk.Attrs().Index, netlink.SCOPE_LINK
			if src := src4; r.Addr().Is6() {
				if src6.IsValid() {
					rt.Src = src6.AsSlice()
				}
			} else if src.IsValid() {
				rt.Src = src.AsSlice()
			}
		}
		if err := netlink.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("routes: add %s to table %d: %w", r, RouteTable, err))
			continue
		}
		t.routes[r] = typ
	}
	// A default route in table 52 must not capture link-local traffic
	// (IPv6 neighbours and routers on the LAN, 169.254/16): throw routes
	// send those lookups on to the main table.
	wantThrow := map[netip.Prefix]bool{}
	for r := range want {
		if routeprefix.IsExit(r) {
			wantThrow[linkLocal[r.Addr().Is6()]] = true
		}
	}
	for r := range t.throws {
		if !wantThrow[r] {
			err := netlink.RouteDel(&netlink.Route{Dst: toNet(r), Table: RouteTable, Type: unix.RTN_THROW})
			if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("routes: remove throw %s from table %d: %w", r, RouteTable, err))
				continue
			}
			delete(t.throws, r)
		}
	}
	for r := range wantThrow {
		if t.throws[r] {
			continue
		}
		if err := netlink.RouteReplace(&netlink.Route{Dst: toNet(r), Table: RouteTable, Type: unix.RTN_THROW}); err != nil {
			errs = append(errs, fmt.Errorf("routes: add throw %s to table %d: %w", r, RouteTable, err))
			continue
		}
		t.throws[r] = true
	}
	rules := ""
	if len(t.routes) > 0 {
		rules = "table"
		if allowLAN {
			rules += "+lan"
		}
	}
	if rules != t.rules {
		if err := setRules(rules != "", allowLAN); err != nil {
			errs = append(errs, err)
		} else {
			t.rules = rules
		}
	}
	return errors.Join(errs...)
}

// Clear removes every route and rule Set installed.
func (t *tunnelRoutes) Clear() error { return t.Set(nil, nil, false, netip.Addr{}, netip.Addr{}) }

// setRules removes this daemon's rules (any left over included) and adds
// those wanted.
func setRules(on, allowLAN bool) error {
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		list, err := netlink.RuleList(fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("routes: list rules: %w", err))
			continue
		}
		for i := range list {
			switch list[i].Priority {
			case prioMark, prioLAN, prioTable:
				r := list[i]
				r.Family = fam
				if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("routes: remove rule %d: %w", r.Priority, err))
				}
			}
		}
		if !on {
			continue
		}
		mark := netlink.NewRule()
		mark.Family, mark.Priority, mark.Table, mark.Mark = fam, prioMark, unix.RT_TABLE_MAIN, RouteMark
		mask := uint32(0xffffffff)
		mark.Mask = &mask
		add := []*netlink.Rule{mark}
		if allowLAN {
			lan := netlink.NewRule()
			lan.Family, lan.Priority, lan.Table, lan.SuppressPrefixlen = fam, prioLAN, unix.RT_TABLE_MAIN, 0
			add = append(add, lan)
		}
		tab := netlink.NewRule()
		tab.Family, tab.Priority, tab.Table = fam, prioTable, RouteTable
		add = append(add, tab)
		for _, r := range add {
			if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("routes: add rule %d: %w", r.Priority, err))
			}
		}
	}
	return errors.Join(errs...)
}

// cleanupRouting removes the rules and table 52 routes a previous daemon
// in this network namespace may have left (a crash).
func cleanupRouting() error {
	errs := []error{setRules(false, false)}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		list, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: RouteTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i := range list {
			if err := netlink.RouteDel(&list[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
