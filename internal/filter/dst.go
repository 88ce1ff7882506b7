package filter

import (
	"net/netip"

	"github.com/warrenmesh/warren/internal/routeprefix"
)

// Destinations is where a node lets its peers' packets go: its own
// tunnel addresses (Local), and the routes an admin approved for it to
// forward to (Routes; 0.0.0.0/0 and ::/0 on an approved exit node). A
// packet from a peer addressed anywhere else is dropped whatever the
// rules say (DropDestination): a subnet router forwards only into its
// approved subnets, a router that is not an approved exit node forwards
// nothing to the internet, and a policy rule without Dst ("*") never
// widens that. An approved default route does not cover link-local
// destinations (169.254.0.0/16, fe80::/10: a cloud's metadata service,
// the exit node's own link neighbours); only a route that names them
// explicitly does.
type Destinations struct {
	Local  []netip.Addr
	Routes []netip.Prefix
}

var (
	linkLocal4 = netip.MustParsePrefix("169.254.0.0/16")
	linkLocal6 = netip.MustParsePrefix("fe80::/10")
)

// dstSet is Destinations compiled for matching.
type dstSet struct {
	local      []netip.Addr
	routes     []netip.Prefix // approved, not default routes
	any4, any6 bool           // an approved default route of the family
}

func compileDsts(d Destinations) *dstSet {
	s := &dstSet{}
	for _, a := range d.Local {
		if a.IsValid() {
			s.local = append(s.local, a.Unmap())
		}
	}
	for _, p := range d.Routes {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		switch {
		case routeprefix.IsExit(p) && p.Addr().Is4():
			s.any4 = true
		case routeprefix.IsExit(p):
			s.any6 = true
		default:
			s.routes = append(s.routes, p)
		}
	}
	return s
}

// permits reports whether a peer's packet may go to dst.
func (s *dstSet) permits(dst netip.Addr) bool {
	for _, a := range s.local {
		if a == dst {
			return true
		}
	}
	for _, p := range s.routes {
		if p.Contains(dst) {
			return true
		}
	}
	if dst.Is4() {
		return s.any4 && !linkLocal4.Contains(dst)
	}
	return s.any6 && !linkLocal6.Contains(dst)
}

// dstOf reads the destination address of an IPv4 or IPv6 packet.
func dstOf(b []byte) (netip.Addr, bool) {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(b[16:20])), true
	case len(b) >= 40 && b[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(b[24:40])), true
	}
	return netip.Addr{}, false
}
