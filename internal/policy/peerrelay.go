package policy

import (
	"fmt"
	"slices"

	"github.com/warrenmesh/warren/internal/filter"
)

// PeerRelayRule says which nodes may use which peer relays (docs/POLICY.md,
// "Peer relays"):
//
//	"peerRelays": [
//	  {"relay": ["tag:relay"], "users": ["group:eng", "tag:ci"]},
//	]
//
// A node matching users may have its traffic forwarded by an approved
// peer relay matching relay (each an identity alias: "*", a user, a group,
// a tag, or a node address or prefix). Without a policy every node may
// use every approved peer relay; with one, only what a rule names.
type PeerRelayRule struct {
	Relay []string `json:"relay"`
	Users []string `json:"users"`
}

type relayRule struct{ relay, users []alias }

// validatePeerRelays resolves the aliases of the peerRelays rules.
func (p *Policy) validatePeerRelays() error {
	p.relayRules = nil
	for i, r := range p.PeerRelays {
		var rr relayRule
		for _, f := range []struct {
			name  string
			in    []string
			out   *[]alias
			label string
		}{{"relay", r.Relay, &rr.relay, "relay"}, {"users", r.Users, &rr.users, "users"}} {
			if len(f.in) == 0 {
				return p.errPath(ptr("peerRelays", i), "peer relay rule without %s", f.label)
			}
			for j, s := range f.in {
				a, err := p.parseAlias(s, false, false)
				if err == nil && a.kind != aAny && a.kind != aUser && a.kind != aGroup && a.kind != aTag && a.kind != aPrefix {
					err = fmt.Errorf("%q does not name nodes", s)
				}
				if err != nil {
					return p.errPath(ptr("peerRelays", i, f.name, j), "%v", err)
				}
				*f.out = append(*f.out, a)
			}
		}
		p.relayRules = append(p.relayRules, rr)
	}
	return nil
}

// compileRelays fills in the specs' PeerRelays and RelayClients: for each
// approved peer relay, the nodes the rules let use it.
func (p *Policy) compileRelays(nodes []Node, specs map[uint64]*filter.Spec) {
	for i := range nodes {
		r := &nodes[i]
		if !r.Relay {
			continue
		}
		for j := range nodes {
			u := &nodes[j]
			if p.MayUseRelay(u, r) {
				specs[u.ID].PeerRelays = append(specs[u.ID].PeerRelays, r.ID)
				specs[r.ID].RelayClients = append(specs[r.ID].RelayClients, u.ID)
			}
		}
	}
	for _, s := range specs {
		slices.Sort(s.PeerRelays)
		slices.Sort(s.RelayClients)
	}
}

// MayUseRelay reports whether node user may use node relay as a peer
// relay (relay must also be approved by an admin, which the policy does
// not know). A nil policy allows it.
func (p *Policy) MayUseRelay(user, relay *Node) bool {
	if p == nil {
		return true
	}
	if user.ID == relay.ID {
		return false
	}
	for _, r := range p.relayRules {
		if slices.ContainsFunc(r.relay, func(a alias) bool { return p.matchesNode(&a, relay) }) &&
			slices.ContainsFunc(r.users, func(a alias) bool { return p.matchesNode(&a, user) }) {
			return true
		}
	}
	return false
}
