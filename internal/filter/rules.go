// Package filter is the data-plane packet filter a node runs on the packets
// its peers send it: the access policy (package policy) compiled by the
// coordination server for this one node, plus a connection table so that
// replies to flows this node started pass.
//
// A node's filter is a list of Rules, each allowing packets INTO the node
// from a set of source prefixes, for a set of IP protocols and (for TCP and
// UDP) destination ports. Everything else addressed to the node is dropped,
// except replies: the engine records each flow the node starts (Record, on
// the send path: a TCP SYN, any UDP packet, an ICMP echo request) in a
// bounded table with idle expiry, and Allow lets the packets coming back on
// such a flow in (and ICMP errors about it). The table is keyed by the full
// 5-tuple, so a recorded flow opens nothing but its own replies.
//
// ICMP: an echo request, or any other ICMP message that is not an echo
// reply nor an error, needs a rule allowing ICMP from its source (ports do
// not apply); an echo reply needs a recorded echo request with the same
// identifier; an error (unreachable, time exceeded, packet too big,
// parameter problem) needs the flow of the packet it quotes to be recorded,
// or a rule allowing ICMP from its source. Non-first IPv4 or IPv6
// fragments carry no ports and pass (the first fragment decides: without
// it nothing reassembles).
//
// Allow and Record do not allocate. The rules are read with one atomic load
// (Set swaps them whole); the table is sharded, one short mutex per lookup.
//
// Before any rule, Check looks at the destination (SetDestinations): the
// node's own addresses, or one of the routes an admin approved for it to
// forward to (0.0.0.0/0 and ::/0 only on an approved exit node, and then
// not link-local addresses). Anything else is DropDestination, whatever
// the rules say, so a router forwards nothing beyond its approvals.
//
// The wire form (the JSON in netmap.NetworkMap.PacketFilter) is Spec. A map
// without a PacketFilter means "no policy": the daemon sets the filter
// open (SetNoPolicy: every packet passes the rules, no flow is recorded)
// and only destinations are checked. An empty Spec is a policy that
// allows nothing into this node.
package filter

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// IP protocol numbers the filter knows.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Spec is a node's compiled filter as the server sends it.
type Spec struct {
	Rules []Rule `json:"rules"`
	// PeerRelays are the IDs of the peer relays this node may use, and
	// RelayClients, on a peer relay, the nodes that may use it (the
	// policy's peerRelays rules; docs/POLICY.md). They are not packet
	// rules: the path layer and the peer relay read them.
	PeerRelays   []uint64 `json:"peerRelays,omitempty"`
	RelayClients []uint64 `json:"relayClients,omitempty"`
}

// Rule allows packets from any of Src, of any of Protos, to any of Ports
// (TCP and UDP destination ports on this node; ICMP ignores them). No
// Ports means every port. Dst, when set, limits the rule to packets
// addressed to one of its prefixes: a node that routes for others (a
// subnet router, an exit node) gets rules for its own addresses and rules
// for what it forwards, each with its Dst. No Dst means any destination,
// which on a node that forwards nothing is the node itself.
type Rule struct {
	Src    []netip.Prefix `json:"src"`
	Protos []int          `json:"protos"`
	Ports  []PortRange    `json:"ports,omitempty"`
	Dst    []netip.Prefix `json:"dst,omitempty"`
}

// PortRange is First..Last inclusive; it encodes as "22" or "80-443".
type PortRange struct{ First, Last uint16 }

// AllPorts is 0-65535.
var AllPorts = PortRange{0, 65535}

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// Contains reports whether p is in r.
func (r PortRange) Contains(p uint16) bool { return r.First <= p && p <= r.Last }

// MarshalText encodes r as "N" or "N-M".
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses "N", "N-M" or "*".
func (r *PortRange) UnmarshalText(b []byte) error {
	p, err := ParsePortRange(string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// ParsePortRange parses "N", "N-M" (N <= M) or "*".
func ParsePortRange(s string) (PortRange, error) {
	if s == "*" {
		return AllPorts, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return PortRange{}, fmt.Errorf("bad port %q", s)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
			return PortRange{}, fmt.Errorf("bad port range %q", s)
		}
	}
	return PortRange{uint16(a), uint16(b)}, nil
}

// ParseSpec decodes and checks the wire form.
func ParseSpec(b []byte) (*Spec, error) {
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	for i, r := range s.Rules {
		for _, p := range r.Src {
			if !p.IsValid() {
				return nil, fmt.Errorf("filter: rule %d: invalid source prefix", i)
			}
		}
		for _, p := range r.Dst {
			if !p.IsValid() {
				return nil, fmt.Errorf("filter: rule %d: invalid destination prefix", i)
			}
		}
	}
	return &s, nil
}

// ruleset is a Spec compiled for matching.
type ruleset struct {
	rules  []crule
	hasDst bool    // some rule has a Dst: match destinations
	open   bool    // no policy: every packet passes the rules
	dsts   *dstSet // where peers' packets may go; nil: anywhere
}

func (r *crule) dstMatches(dst netip.Addr) bool {
	if len(r.dst) == 0 {
		return true
	}
	for _, p := range r.dst {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

type crule struct {
	hosts  map[netip.Addr]struct{} // single-address sources
	nets   []netip.Prefix          // wider sources
	any4   bool                    // 0.0.0.0/0 among the sources
	any6   bool                    // ::/0 among the sources
	protos uint64                  // bit per protocol number < 64
	ports  []PortRange             // empty: all
	dst    []netip.Prefix          // empty: any destination
}

func compile(s *Spec) *ruleset {
	rs := &ruleset{}
	for _, r := range s.Rules {
		c := crule{hosts: map[netip.Addr]struct{}{}}
		for _, p := range r.Src {
			p = p.Masked()
			switch {
			case p.Bits() == 0 && p.Addr().Is4():
				c.any4 = true
			case p.Bits() == 0:
				c.any6 = true
			case p.IsSingleIP():
				c.hosts[p.Addr()] = struct{}{}
			default:
				c.nets = append(c.nets, p)
			}
		}
		for _, pr := range r.Protos {
			if pr >= 0 && pr < 64 {
				c.protos |= 1 << pr
			}
		}
		if !slices.Contains(r.Ports, AllPorts) {
			c.ports = slices.Clone(r.Ports)
		}
		for _, p := range r.Dst {
			c.dst = append(c.dst, p.Masked())
		}
		if len(c.dst) > 0 {
			rs.hasDst = true
		}
		rs.rules = append(rs.rules, c)
	}
	return rs
}

// allows reports whether some rule lets proto/port in from src. hasPort
// is false for protocols without ports (ICMP) and non-first fragments.
func (rs *ruleset) allows(src, dst netip.Addr, proto uint8, port uint16, hasPort bool) bool {
	if proto >= 64 {
		return false
	}
	bit := uint64(1) << proto
	for i := range rs.rules {
		r := &rs.rules[i]
		if r.protos&bit == 0 || rs.hasDst && !r.dstMatches(dst) {
			continue
		}
		if hasPort && len(r.ports) > 0 {
			ok := false
			for _, pr := range r.ports {
				if pr.Contains(port) {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		if r.srcMatches(src) {
			return true
		}
	}
	return false
}

func (r *crule) srcMatches(src netip.Addr) bool {
	if src.Is4() && r.any4 || src.Is6() && r.any6 {
		return true
	}
	if _, ok := r.hosts[src]; ok {
		return true
	}
	for _, p := range r.nets {
		if p.Contains(src) {
			return true
		}
	}
	return false
}
