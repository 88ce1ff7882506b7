// Package netmap defines the network map a node receives from the
// coordination server and the deltas that keep it up to date.
//
// On its control stream a node first receives a full NetworkMap, then a
// series of Deltas. Every map carries a Version that increases
// monotonically on that stream; a Delta names the version it applies to
// (From) and the version it produces (To), so a lost or reordered delta is
// detected by Apply and forces a full resync instead of silently diverging.
// A node persists its last map with Save and reloads it with Load so it
// keeps working while the server is unreachable, including across restarts.
//
// The JSON encoding is part of the control protocol (ProtocolVersion): field
// names are explicit, keys are base64, times are UTC RFC 3339, and empty
// lists encode as [] rather than null, so equal maps encode identically.
package netmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/routeprefix"
)

// ProtocolVersion is the version of the netmap wire format. It changes
// whenever the JSON encoding of NetworkMap or Delta changes incompatibly.
const ProtocolVersion = 1

// NetworkMap is everything a node needs to know about its tailnet.
type NetworkMap struct {
	Version      uint64          // monotonic per node stream
	Self         Node            // the receiving node
	Peers        []Node          // every other node, sorted by ID
	Domain       string          // tailnet DNS domain, e.g. "warren.internal"
	DNS          DNSConfig       // resolver configuration
	PacketFilter json.RawMessage // policy placeholder; nil when none
	Relays       []RelayRegion   // packet relays, by preference
}

// DNSConfig is the resolver configuration pushed to nodes: custom records
// and zones answered by every node's own resolver, and split-DNS routes.
type DNSConfig struct {
	Nameservers   []netip.Addr `json:"nameservers"`
	SearchDomains []string     `json:"searchDomains"`
	Records       []DNSRecord  `json:"records"` // sorted by name, type, value
	Zones         []string     `json:"zones"`   // custom zones, sorted
	Routes        []DNSRoute   `json:"routes"`  // split DNS, sorted by domain
}

// Node is one machine in the network map.
type Node struct {
	ID   uint64 // nonzero, unique
	Name string // unique DNS label
	User string // owning user's name (for a tagged node: the user who made its key)
	// Tags ("tag:NAME", sorted) make a tagged node: owned by its tags,
	// not by User, so never treated as one of User's own machines.
	Tags       []string
	Key        pubkey.Node      // WireGuard public key, unique
	Addresses  []netip.Prefix   // the node's own tunnel addresses (single hosts)
	AllowedIPs []netip.Prefix   // prefixes routed to the node
	Endpoints  []netip.AddrPort // UDP endpoints the node reported
	Online     bool
	LastSeen   time.Time
	Expiry     time.Time // zero: never expires
	// DiscoKey is the node's path-probe key (package magicsock): probes
	// between nodes are sealed with it. Zero: the node does not probe.
	DiscoKey pubkey.Disco
	// Routes are the prefixes the node routes for others: advertised by
	// the node and approved by an admin, sorted. 0.0.0.0/0 and ::/0 make
	// it an exit node. They are not in AllowedIPs: each peer's daemon
	// decides which of them it uses (--accept-routes, --exit-node).
	Routes []netip.Prefix
	// Via is nonzero for a WireGuard-only member (a phone or router with
	// stock WireGuard, see docs/WIREGUARD.md): the ID of the gateway node
	// it connects through. Such a node has no disco key and no endpoints;
	// the gateway peers with it directly, every other node reaches its
	// addresses through the gateway.
	Via uint64
	// RelayPort is the UDP port the node serves as a peer relay on: set
	// only when the node offers one and an admin approved it (0: not a
	// peer relay). Who may use it is in each node's packet filter
	// (filter.Spec's PeerRelays and RelayClients); with no filter, every
	// node may.
	RelayPort uint16
	// Traffic is a WireGuard-only member's traffic as its gateway last
	// reported it (zero: no report). The server publishes a change at
	// most once per interval per member (docs/WIREGUARD.md), so ever
	// moving counters cost a bounded number of deltas.
	Traffic Traffic
}

// Traffic is a WireGuard-only member's traffic counters as its gateway
// sees them: RxBytes received from the member, TxBytes sent to it, and At
// when the gateway reported these values.
type Traffic struct {
	RxBytes uint64    `json:"rxBytes"`
	TxBytes uint64    `json:"txBytes"`
	At      time.Time `json:"at"`
}

// IsZero reports whether t carries no report.
func (t Traffic) IsZero() bool { return t.RxBytes == 0 && t.TxBytes == 0 && t.At.IsZero() }

// Equal reports whether two reports are the same (times as instants).
func (t Traffic) Equal(o Traffic) bool {
	return t.RxBytes == o.RxBytes && t.TxBytes == o.TxBytes && t.At.Equal(o.At)
}

// IsWireGuardOnly reports whether the node is a WireGuard-only member.
func (n *Node) IsWireGuardOnly() bool { return n.Via != 0 }

// IsExitNode reports whether the node offers a default route.
func (n *Node) IsExitNode() bool { return slices.ContainsFunc(n.Routes, routeprefix.IsExit) }

// Errors returned by Validate, Apply and Load wrap one of these.
var (
	ErrInvalid         = errors.New("netmap: invalid")
	ErrVersionMismatch = errors.New("netmap: delta does not apply to this version")
	ErrInconsistent    = errors.New("netmap: inconsistent delta")
)

// --- equality and copies ---

// Equal reports whether two nodes carry the same information. Nil and empty
// lists are equal, times are compared as instants.
func (n *Node) Equal(o *Node) bool {
	return n.ID == o.ID && n.Name == o.Name && n.User == o.User && n.Key == o.Key &&
		slices.Equal(n.Addresses, o.Addresses) && slices.Equal(n.AllowedIPs, o.AllowedIPs) &&
		slices.Equal(n.Endpoints, o.Endpoints) && n.Online == o.Online &&
		n.LastSeen.Equal(o.LastSeen) && n.Expiry.Equal(o.Expiry) && n.DiscoKey == o.DiscoKey &&
		slices.Equal(n.Routes, o.Routes) && slices.Equal(n.Tags, o.Tags) && n.Via == o.Via && n.RelayPort == o.RelayPort &&
		n.Traffic.Equal(o.Traffic)
}

// IsTagged reports whether the node is owned by tags rather than a user.
func (n *Node) IsTagged() bool { return len(n.Tags) > 0 }

// Clone returns a deep copy of n.
func (n Node) Clone() Node {
	n.Addresses = slices.Clone(n.Addresses)
	n.AllowedIPs = slices.Clone(n.AllowedIPs)
	n.Endpoints = slices.Clone(n.Endpoints)
	n.Routes = slices.Clone(n.Routes)
	n.Tags = slices.Clone(n.Tags)
	return n
}

// Equal reports whether two DNS configurations are the same.
func (c DNSConfig) Equal(o DNSConfig) bool {
	return slices.Equal(c.Nameservers, o.Nameservers) && slices.Equal(c.SearchDomains, o.SearchDomains) &&
		slices.Equal(c.Records, o.Records) && slices.Equal(c.Zones, o.Zones) &&
		slices.EqualFunc(c.Routes, o.Routes, func(a, b DNSRoute) bool {
			return a.Domain == b.Domain && slices.Equal(a.Resolvers, b.Resolvers)
		})
}

// Clone returns a deep copy of c.
func (c DNSConfig) Clone() DNSConfig {
	out := DNSConfig{Nameservers: slices.Clone(c.Nameservers), SearchDomains: slices.Clone(c.SearchDomains),
		Records: slices.Clone(c.Records), Zones: slices.Clone(c.Zones)}
	for _, r := range c.Routes {
		out.Routes = append(out.Routes, DNSRoute{Domain: r.Domain, Resolvers: slices.Clone(r.Resolvers)})
	}
	return out
}

// Equal reports whether two maps carry the same information (including
// Version). Packet filters are compared in compact form.
func (m *NetworkMap) Equal(o *NetworkMap) bool {
	if m == nil || o == nil {
		return m == o
	}
	if m.Version != o.Version || m.Domain != o.Domain || !m.Self.Equal(&o.Self) ||
		!m.DNS.Equal(o.DNS) || !rawEqual(m.PacketFilter, o.PacketFilter) || len(m.Peers) != len(o.Peers) ||
		!relaysEqual(m.Relays, o.Relays) {
		return false
	}
	for i := range m.Peers {
		if !m.Peers[i].Equal(&o.Peers[i]) {
			return false
		}
	}
	return true
}

// Clone returns a deep copy of m.
func (m *NetworkMap) Clone() *NetworkMap {
	c := *m
	c.Self = m.Self.Clone()
	c.Peers = make([]Node, len(m.Peers))
	for i := range m.Peers {
		c.Peers[i] = m.Peers[i].Clone()
	}
	c.DNS = m.DNS.Clone()
	c.PacketFilter = canonRaw(m.PacketFilter)
	c.Relays = slices.Clone(m.Relays)
	return &c
}

// Peer returns the peer with the given ID.
func (m *NetworkMap) Peer(id uint64) (*Node, bool) {
	i, ok := slices.BinarySearchFunc(m.Peers, id, func(n Node, id uint64) int { return cmpU64(n.ID, id) })
	if !ok {
		return nil, false
	}
	return &m.Peers[i], true
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// canonRaw returns the compact form of a JSON value, or nil for an absent
// value or JSON null. Invalid JSON is returned unchanged (Validate rejects it).
func canonRaw(r json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(r)) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, r); err != nil {
		return bytes.Clone(r)
	}
	if b.String() == "null" {
		return nil
	}
	// Escape <, >, & and U+2028/9 the way json.Marshal does, so the
	// canonical form is what an encode/decode round trip yields.
	var e bytes.Buffer
	json.HTMLEscape(&e, b.Bytes())
	return e.Bytes()
}

func rawEqual(a, b json.RawMessage) bool { return bytes.Equal(canonRaw(a), canonRaw(b)) }

// --- validation ---

// Validate checks the map's internal consistency: peers sorted by ID, IDs
// nonzero and unique (Self included), keys nonzero and unique, names unique
// DNS labels, node addresses valid single-host prefixes owned by one node
// only, allowed IPs and endpoints valid, the domain and search domains DNS
// names, nameservers valid, the packet filter valid JSON, and times
// encodable. It does not check that addresses lie inside particular
// prefixes: that is the server's allocation policy, not a map invariant.
func (m *NetworkMap) Validate() error {
	if m == nil {
		return fmt.Errorf("%w: nil map", ErrInvalid)
	}
	ids := map[uint64]bool{}
	keys := map[pubkey.Node]uint64{}
	names := map[string]uint64{}
	addrs := map[netip.Addr]uint64{}
	check := func(n *Node, what string) error {
		if err := n.validate(); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
		}
		if ids[n.ID] {
			return fmt.Errorf("%w: %s: duplicate id %d", ErrInvalid, what, n.ID)
		}
		ids[n.ID] = true
		if o, dup := keys[n.Key]; dup {
			return fmt.Errorf("%w: %s: key %s also used by node %d", ErrInvalid, what, n.Key, o)
		}
		keys[n.Key] = n.ID
		if o, dup := names[n.Name]; dup {
			return fmt.Errorf("%w: %s: name %q also used by node %d", ErrInvalid, what, n.Name, o)
		}
		names[n.Name] = n.ID
		for _, p := range n.Addresses {
			if o, dup := addrs[p.Addr()]; dup {
				return fmt.Errorf("%w: %s: address %s also used by node %d", ErrInvalid, what, p.Addr(), o)
			}
			addrs[p.Addr()] = n.ID
		}
		return nil
	}
	if err := check(&m.Self, "self"); err != nil {
		return err
	}
	for i := range m.Peers {
		if i > 0 && m.Peers[i].ID < m.Peers[i-1].ID {
			return fmt.Errorf("%w: peers not sorted by id (%d after %d)", ErrInvalid, m.Peers[i].ID, m.Peers[i-1].ID)
		}
		if err := check(&m.Peers[i], fmt.Sprintf("peer %d", m.Peers[i].ID)); err != nil {
			return err
		}
	}
	if m.Domain != "" && !dnsname.IsName(m.Domain) {
		return fmt.Errorf("%w: domain %q is not a DNS name", ErrInvalid, m.Domain)
	}
	if err := m.DNS.validate(); err != nil {
		return err
	}
	if err := validateRelays(m.Relays); err != nil {
		return err
	}
	if len(m.PacketFilter) > 0 && !json.Valid(m.PacketFilter) {
		return fmt.Errorf("%w: packet filter is not valid JSON", ErrInvalid)
	}
	return nil
}

func (n *Node) validate() error {
	if n.ID == 0 {
		return errors.New("id 0")
	}
	if !dnsname.IsLabel(n.Name) {
		return fmt.Errorf("name %q is not a DNS label", n.Name)
	}
	if n.Key.IsZero() {
		return errors.New("zero key")
	}
	seen := map[netip.Addr]bool{}
	for _, p := range n.Addresses {
		if !p.IsValid() || !p.IsSingleIP() || p.Addr().Zone() != "" {
			return fmt.Errorf("address %s is not a single-host prefix", p)
		}
		if seen[p.Addr()] {
			return fmt.Errorf("address %s listed twice", p.Addr())
		}
		seen[p.Addr()] = true
	}
	for _, p := range n.AllowedIPs {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("allowed IP %s is not a canonical prefix", p)
		}
	}
	for _, p := range n.Routes {
		if err := routeprefix.Check(p); err != nil {
			return err
		}
	}
	for _, e := range n.Endpoints {
		if !e.IsValid() || e.Port() == 0 {
			return fmt.Errorf("endpoint %s is not valid", e)
		}
	}
	for _, t := range []time.Time{n.LastSeen, n.Expiry} {
		if y := t.Year(); y < 0 || y > 9999 {
			return fmt.Errorf("time %v out of range", t)
		}
	}
	return nil
}
