package server

import (
	"bytes"
	"cmp"
	"encoding/json"
	"net/netip"
	"slices"

	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/policy"
	"github.com/warrenmesh/warren/internal/routeprefix"
	"github.com/warrenmesh/warren/internal/store"
)

// The access policy (package policy) is loaded on each full reload, like
// the DNS configuration. Each node gets its own compiled filter: in its
// full map, and as a per-stream delta (netmap.Delta.PacketFilter) when it
// changes. A node's filter depends on the policy and on every node's
// identity (user, tags, addresses), so it is recompiled when either
// changes (routes included: a router's filter covers its approved
// routes), never for online state or endpoints: the common fanout path
// does not touch filters.
type policyState struct {
	text    string                 // the policy in force ("" none)
	p       *policy.Policy         // parsed; nil: no policy (allow all)
	idents  map[uint64]policy.Node // every world node's identity
	dirty   bool                   // policy or identities changed: recompile
	filters map[uint64][]byte      // each node's filter JSON; nil map: no policy
	changed bool                   // filters changed since the last fanout
}

// identOf is a node's identity as the policy sees it.
func identOf(n *store.Node, nn *netmap.Node) policy.Node {
	return policy.Node{ID: nn.ID, User: nn.User, Tags: n.Tags, Addrs: nn.Addresses, Routes: nn.Routes, Via: nn.Via, Relay: nn.RelayPort != 0}
}

func identEqual(a, b policy.Node) bool {
	return a.ID == b.ID && a.User == b.User && slices.Equal(a.Tags, b.Tags) && slices.Equal(a.Addrs, b.Addrs) &&
		slices.Equal(a.Routes, b.Routes) && a.Via == b.Via && a.Relay == b.Relay
}

// setPolicyLocked puts a policy read from the store in force unless it
// is the one in force already; s.mu held.
func (s *Server) setPolicyLocked(pu *policyUpdate) {
	if pu.text == s.pol.text && (s.pol.p != nil || pu.text == "") {
		return
	}
	if pu.bad {
		// Stored policies were checked on upload; keep the last good one.
		s.log.Error("control: stored policy does not parse; keeping the previous one", "policy", pu.id, "err", pu.err)
		return
	}
	s.pol.text, s.pol.p, s.pol.dirty = pu.text, pu.p, true
	s.kickFanout()
}

// setIdentsLocked replaces every identity (full reload); s.mu held.
func (s *Server) setIdentsLocked(idents map[uint64]policy.Node) {
	if len(idents) != len(s.pol.idents) {
		s.pol.dirty = true
	} else {
		for id, n := range idents {
			if o, ok := s.pol.idents[id]; !ok || !identEqual(o, n) {
				s.pol.dirty = true
				break
			}
		}
	}
	s.pol.idents = idents
}

// setIdentLocked updates one node's identity (nil: gone); s.mu held.
func (s *Server) setIdentLocked(id uint64, n *policy.Node) {
	o, had := s.pol.idents[id]
	switch {
	case n == nil && had:
		delete(s.pol.idents, id)
		s.pol.dirty = true
	case n != nil && (!had || !identEqual(o, *n)):
		if s.pol.idents == nil {
			s.pol.idents = map[uint64]policy.Node{}
		}
		s.pol.idents[id] = *n
		s.pol.dirty = true
	}
}

// compileLocked recompiles every node's filter if the policy or an
// identity changed, and notes whether any filter changed; s.mu held.
func (s *Server) compileLocked() {
	if !s.pol.dirty {
		return
	}
	s.pol.dirty = false
	if s.pol.p == nil {
		if s.pol.filters != nil {
			s.pol.filters, s.pol.changed = nil, true
		}
		return
	}
	nodes := make([]policy.Node, 0, len(s.pol.idents))
	for _, n := range s.pol.idents {
		nodes = append(nodes, n)
	}
	specs := s.pol.p.Compile(nodes)
	addGatewayRules(specs, nodes, s.st.ServiceAddrs())
	next := make(map[uint64][]byte, len(specs))
	for id, spec := range specs {
		b, err := json.Marshal(spec)
		if err != nil {
			s.log.Error("control: encoding a filter failed", "node", id, "err", err)
			b = []byte(`{"rules":[]}`) // nothing in: never fail open
		}
		if old, ok := s.pol.filters[id]; ok && bytes.Equal(old, b) {
			b = old
		}
		next[id] = b
	}
	if s.pol.filters == nil || len(next) != len(s.pol.filters) {
		s.pol.changed = true
	} else {
		for id, b := range next {
			if !bytes.Equal(s.pol.filters[id], b) {
				s.pol.changed = true
				break
			}
		}
	}
	s.pol.filters = next
}

// filterLocked is node id's current filter (nil: no policy); s.mu held.
func (s *Server) filterLocked(id uint64) json.RawMessage {
	s.compileLocked()
	if s.pol.filters == nil {
		return nil
	}
	if b, ok := s.pol.filters[id]; ok {
		return b
	}
	return json.RawMessage(`{"rules":[]}`)
}

// Policy returns the parsed policy in force (nil: none), as last loaded.
func (s *Server) Policy() *policy.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pol.p
}

// addGatewayRules gives each gateway the filtering of its WireGuard-only
// members, which cannot filter for themselves (docs/WIREGUARD.md): the
// member's own rules, limited to packets addressed to the member; a rule
// letting the member's packets through to the other members and their
// subnet routes, which then filter them as they would any member's (the
// gateway's own addresses are not in it: its own rules for the member
// decide what reaches it); and DNS to MagicDNS on the service addresses.
func addGatewayRules(specs map[uint64]*filter.Spec, nodes []policy.Node, dns []netip.Addr) {
	all := []int{filter.ProtoICMP, filter.ProtoTCP, filter.ProtoUDP, filter.ProtoICMPv6}
	// In ID order, so the same world compiles to the same filters.
	nodes = slices.Clone(nodes)
	slices.SortFunc(nodes, func(a, b policy.Node) int { return cmp.Compare(a.ID, b.ID) })
	for _, n := range nodes {
		if n.Via == 0 {
			continue
		}
		gw := specs[n.Via]
		if gw == nil {
			gw = &filter.Spec{}
			specs[n.Via] = gw
		}
		if dev := specs[n.ID]; dev != nil {
			for _, r := range dev.Rules {
				r.Dst = slices.Clone(n.Addrs)
				gw.Rules = append(gw.Rules, r)
			}
		}
		var others []netip.Prefix
		for _, o := range nodes {
			if o.ID == n.ID || o.ID == n.Via {
				continue
			}
			others = append(others, o.Addrs...)
			for _, p := range o.Routes {
				if !routeprefix.IsExit(p) {
					others = append(others, p)
				}
			}
		}
		if len(others) > 0 {
			gw.Rules = append(gw.Rules, filter.Rule{Src: slices.Clone(n.Addrs), Protos: all, Dst: others})
		}
		var svc []netip.Prefix
		for _, a := range dns {
			svc = append(svc, netip.PrefixFrom(a, a.BitLen()))
		}
		gw.Rules = append(gw.Rules, filter.Rule{Src: slices.Clone(n.Addrs), Protos: []int{filter.ProtoTCP, filter.ProtoUDP},
			Ports: []filter.PortRange{{First: 53, Last: 53}}, Dst: svc})
	}
}
