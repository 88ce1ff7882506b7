package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/routeprefix"
)

// Node is what the policy needs to know about a node.
type Node struct {
	ID    uint64
	User  string         // owning user's name (ignored when Tags is set)
	Tags  []string       // a tagged node is owned by its tags
	Addrs []netip.Prefix // its own addresses (single hosts)
	// Routes are the prefixes the node routes for others (approved and
	// advertised); 0.0.0.0/0 and ::/0 make it an exit node.
	Routes []netip.Prefix
	// Via is nonzero for a WireGuard-only member: its gateway's ID. The
	// policy treats it as any member; the server adds its filter to the
	// gateway's (control/server, docs/WIREGUARD.md).
	Via uint64
	// Relay says the node is an approved peer relay offering a port.
	Relay bool
}

// exitNode reports whether n offers a default route.
func (n *Node) exitNode() bool {
	return slices.ContainsFunc(n.Routes, routeprefix.IsExit)
}

// subnets are n's routes other than the default routes.
func (n *Node) subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range n.Routes {
		if p.Bits() > 0 {
			out = append(out, p)
		}
	}
	return out
}

func (n *Node) tagged() bool { return len(n.Tags) > 0 }

// matchesNode reports whether an identity alias (not aSelf) covers node n.
func (p *Policy) matchesNode(a *alias, n *Node) bool {
	switch a.kind {
	case aAny:
		return true
	case aUser:
		return !n.tagged() && n.User == a.name
	case aGroup:
		return !n.tagged() && p.inGroup(a.name, n.User)
	case aTag:
		return slices.Contains(n.Tags, a.name)
	case aPrefix:
		for _, pf := range n.Addrs {
			if a.prefix.Bits() <= pf.Bits() && a.prefix.Contains(pf.Addr()) {
				return true
			}
		}
	}
	return false
}

// narrower is the intersection of two overlapping prefixes: the longer.
func narrower(a, b netip.Prefix) netip.Prefix {
	if a.Bits() >= b.Bits() {
		return a
	}
	return b
}

// Internet is what autogroup:internet stands for: every IPv4 address but
// the private, shared (CGNAT, where tunnel addresses live), loopback,
// link-local, multicast and reserved ranges, and IPv6 global unicast
// (2000::/3). An exit node forwards to these only.
var Internet = internetPrefixes()

func internetPrefixes() []netip.Prefix {
	var excl []netip.Prefix
	for _, s := range []string{"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4"} {
		excl = append(excl, netip.MustParsePrefix(s))
	}
	out := subtract(routeprefix.ExitV4, excl)
	return append(out, netip.MustParsePrefix("2000::/3"))
}

// subtract returns the prefixes covering p minus excl.
func subtract(p netip.Prefix, excl []netip.Prefix) []netip.Prefix {
	for _, e := range excl {
		if e.Bits() <= p.Bits() && e.Contains(p.Addr()) {
			return nil // p lies inside an excluded prefix
		}
	}
	if !slices.ContainsFunc(excl, p.Overlaps) {
		return []netip.Prefix{p}
	}
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	b := p.Addr().AsSlice()
	b[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	hi := netip.PrefixFrom(hiAddr, p.Bits()+1)
	return append(subtract(lo, excl), subtract(hi, excl)...)
}

var dnsPorts = []filter.PortRange{{First: 53, Last: 53}}

func (p *Policy) inGroup(group, user string) bool {
	return slices.ContainsFunc(p.Groups[group], func(m string) bool { u, _ := userName(m); return u == user })
}

var anyPrefixes = routeprefix.Exit()

func sortPrefixes(ps []netip.Prefix) []netip.Prefix {
	routeprefix.Sort(ps)
	return slices.Compact(ps)
}

// Compile returns each node's filter: for every node in nodes, the rules
// that allow traffic into it, with their sources expanded to addresses.
// A node no rule reaches gets an empty filter (nothing comes in).
func (p *Policy) Compile(nodes []Node) map[uint64]*filter.Spec {
	srcs := make([][]netip.Prefix, len(p.rules))
	self := make([]map[string][]netip.Prefix, len(p.rules)) // per rule with autogroup:self: user → their untagged nodes among the sources
	for i := range p.rules {
		r := &p.rules[i]
		var out []netip.Prefix
		for j := range r.src {
			a := &r.src[j]
			switch a.kind {
			case aAny:
				out = append(out, anyPrefixes...)
			case aPrefix:
				out = append(out, a.prefix)
			default:
				for k := range nodes {
					if p.matchesNode(a, &nodes[k]) {
						out = append(out, nodes[k].Addrs...)
					}
				}
			}
		}
		srcs[i] = sortPrefixes(out)
		if slices.ContainsFunc(r.dst, func(d dstEntry) bool { return d.kind == aSelf }) {
			self[i] = map[string][]netip.Prefix{}
			for k := range nodes {
				n := &nodes[k]
				if n.tagged() {
					continue
				}
				for j := range r.src {
					if r.src[j].kind != aPrefix && p.matchesNode(&r.src[j], n) {
						self[i][n.User] = append(self[i][n.User], n.Addrs...)
						break
					}
				}
			}
		}
	}
	out := make(map[uint64]*filter.Spec, len(nodes))
	for k := range nodes {
		n := &nodes[k]
		// A node that routes for others gets a destination on every rule:
		// its own addresses, or what it forwards. Other nodes keep rules
		// without one (they receive only their own packets).
		router := len(n.Routes) > 0
		var own []netip.Prefix
		if router {
			own = n.Addrs
		}
		subnets, exit := n.subnets(), n.exitNode()
		spec := &filter.Spec{Rules: []filter.Rule{}}
		for i := range p.rules {
			r := &p.rules[i]
			var ports, selfPorts, anyPorts []filter.PortRange
			matched, selfMatched, anyMatched, internet := false, false, false, false
			var fwd []filter.Rule // forwarded destinations, one rule per dst entry
			for j := range r.dst {
				d := &r.dst[j]
				switch {
				case d.kind == aSelf:
					if !n.tagged() {
						selfMatched = true
						selfPorts = append(selfPorts, d.ports...)
					}
				case d.kind == aInternet:
					if exit {
						internet = true
						fwd = append(fwd, filter.Rule{Protos: r.protos, Ports: portsOut(d.ports), Dst: Internet})
					}
				case d.kind == aAny && router:
					anyMatched = true // everything: the node and all it routes
					anyPorts = append(anyPorts, d.ports...)
				default:
					if p.matchesNode(&d.alias, n) {
						matched = true
						ports = append(ports, d.ports...)
					}
					if d.kind == aPrefix {
						var dst []netip.Prefix
						for _, sn := range subnets {
							if d.prefix.Overlaps(sn) {
								dst = append(dst, narrower(d.prefix, sn))
							}
						}
						if len(dst) > 0 {
							fwd = append(fwd, filter.Rule{Protos: r.protos, Ports: portsOut(d.ports), Dst: sortPrefixes(dst)})
						}
					}
				}
			}
			if len(srcs[i]) > 0 {
				if matched && (!router || len(own) > 0) {
					spec.Rules = append(spec.Rules, filter.Rule{Src: srcs[i], Protos: r.protos, Ports: portsOut(ports), Dst: own})
				}
				if anyMatched {
					spec.Rules = append(spec.Rules, filter.Rule{Src: srcs[i], Protos: r.protos, Ports: portsOut(anyPorts)})
				}
				for _, f := range fwd {
					f.Src = srcs[i]
					spec.Rules = append(spec.Rules, f)
				}
				if internet && len(n.Addrs) > 0 {
					// Clients of an exit node send it their DNS queries.
					spec.Rules = append(spec.Rules, filter.Rule{Src: srcs[i], Protos: []int{filter.ProtoTCP, filter.ProtoUDP}, Ports: dnsPorts, Dst: n.Addrs})
				}
			}
			if selfMatched && len(self[i][n.User]) > 0 && (!router || len(own) > 0) {
				spec.Rules = append(spec.Rules, filter.Rule{Src: sortPrefixes(slices.Clone(self[i][n.User])), Protos: r.protos, Ports: portsOut(selfPorts), Dst: own})
			}
		}
		out[n.ID] = spec
	}
	p.compileRelays(nodes, out)
	return out
}

// portsOut merges ranges; all ports is no list.
func portsOut(ps []filter.PortRange) []filter.PortRange {
	ps = mergePorts(ps)
	if slices.Contains(ps, filter.AllPorts) {
		return nil
	}
	return ps
}

// principal is a test's source or destination: a user, a tag or an
// address (prefix).
type principal struct {
	kind   aliasKind // aUser, aTag or aPrefix
	name   string
	prefix netip.Prefix
}

// covers reports whether alias a (from a rule) covers principal q; src is
// the test's source, for autogroup:self.
func (p *Policy) covers(a *alias, q, src *principal) bool {
	switch a.kind {
	case aAny:
		return true
	case aUser:
		return q.kind == aUser && q.name == a.name
	case aGroup:
		return q.kind == aUser && p.inGroup(a.name, q.name)
	case aTag:
		return q.kind == aTag && q.name == a.name
	case aPrefix:
		return q.kind == aPrefix && a.prefix.Bits() <= q.prefix.Bits() && a.prefix.Contains(q.prefix.Addr())
	case aSelf:
		return q.kind == aUser && src.kind == aUser && q.name == src.name
	case aInternet:
		if q.kind == aInternet {
			return true
		}
		return q.kind == aPrefix && slices.ContainsFunc(Internet, func(ip netip.Prefix) bool {
			return ip.Bits() <= q.prefix.Bits() && ip.Contains(q.prefix.Addr())
		})
	}
	return false
}

func toPrincipal(a alias) principal {
	return principal{kind: a.kind, name: a.name, prefix: a.prefix}
}

// allows evaluates the rules on identities: may src reach dst on proto/port?
func (p *Policy) allows(src, dst *principal, proto int, port uint16) bool {
	for i := range p.rules {
		r := &p.rules[i]
		if !slices.Contains(r.protos, proto) {
			continue
		}
		if !slices.ContainsFunc(r.src, func(a alias) bool { return p.covers(&a, src, src) }) {
			continue
		}
		for j := range r.dst {
			d := &r.dst[j]
			if !p.covers(&d.alias, dst, src) {
				continue
			}
			if proto == filter.ProtoICMP || slices.ContainsFunc(d.ports, func(pr filter.PortRange) bool { return pr.Contains(port) }) {
				return true
			}
		}
	}
	return false
}

// RunTests checks the tests section; the error lists every failing case
// with its position.
func (p *Policy) RunTests() error {
	var errs []error
	for i, t := range p.Tests {
		sa, err := p.parseAlias(t.Src, false, true)
		if err != nil {
			return p.errPath(ptr("tests", i, "src"), "%v", err)
		}
		src := toPrincipal(sa)
		proto := filter.ProtoTCP
		switch strings.ToLower(t.Proto) {
		case "udp":
			proto = filter.ProtoUDP
		case "icmp":
			proto = filter.ProtoICMP
		}
		protoName := strings.ToLower(t.Proto)
		if protoName == "" {
			protoName = "tcp"
		}
		for _, kl := range []struct {
			kind string
			list []string
			want bool
		}{{"accept", t.Accept, true}, {"deny", t.Deny, false}} {
			for j, d := range kl.list {
				da, port, err := p.testDst(d, t.Proto)
				if err != nil {
					return p.errPath(ptr("tests", i, kl.kind, j), "%v", err)
				}
				dst := toPrincipal(da)
				if got := p.allows(&src, &dst, proto, port); got != kl.want {
					verdict := "denied, the test expects it accepted"
					if got {
						verdict = "accepted, the test expects it denied"
					}
					errs = append(errs, p.errPath(ptr("tests", i, kl.kind, j), "test failed: %s from %s to %s is %s", protoName, t.Src, d, verdict))
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("policy tests failed:\n%w", errors.Join(errs...))
	}
	return nil
}
