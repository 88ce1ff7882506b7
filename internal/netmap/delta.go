package netmap

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// Delta turns the map at version From into the map at version To. Absent
// fields mean "unchanged".
type Delta struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`

	Self         *Node        `json:"self,omitempty"`         // new Self, if it changed
	PeersAdded   []Node       `json:"peersAdded,omitempty"`   // full nodes, sorted by ID
	PeersRemoved []uint64     `json:"peersRemoved,omitempty"` // IDs, sorted
	PeersChanged []PeerChange `json:"peersChanged,omitempty"` // patches, sorted by ID

	Domain *string    `json:"domain,omitempty"`
	DNS    *DNSConfig `json:"dns,omitempty"`
	// PacketFilter is the new filter when non-empty; the JSON literal null
	// clears the filter.
	PacketFilter json.RawMessage `json:"packetFilter,omitempty"`
	// Relays is the new relay list when set (an empty list: no relays).
	Relays *[]RelayRegion `json:"relays,omitempty"`
}

// PeerChange patches one existing peer: nil fields are unchanged.
type PeerChange struct {
	ID         uint64
	Name       *string
	User       *string
	Key        *pubkey.Node
	Addresses  *[]netip.Prefix
	AllowedIPs *[]netip.Prefix
	Endpoints  *[]netip.AddrPort
	Online     *bool
	LastSeen   *time.Time
	Expiry     *time.Time
	DiscoKey   *pubkey.Disco
	Routes     *[]netip.Prefix
	Tags       *[]string
	Via        *uint64
	RelayPort  *uint16
	Traffic    *Traffic
}

// IsEmpty reports whether d changes nothing but the version.
func (d *Delta) IsEmpty() bool {
	return d.Self == nil && len(d.PeersAdded) == 0 && len(d.PeersRemoved) == 0 &&
		len(d.PeersChanged) == 0 && d.Domain == nil && d.DNS == nil && len(d.PacketFilter) == 0 && d.Relays == nil
}

func ptr[T any](v T) *T { return &v }

// Diff returns the delta that turns old into new. Both maps are expected to
// be valid (Validate); the delta's From and To are their versions.
func Diff(old, new *NetworkMap) Delta {
	d := Delta{From: old.Version, To: new.Version}
	if !old.Self.Equal(&new.Self) {
		d.Self = ptr(new.Self.Clone())
	}
	oldByID := make(map[uint64]*Node, len(old.Peers))
	for i := range old.Peers {
		oldByID[old.Peers[i].ID] = &old.Peers[i]
	}
	newIDs := make(map[uint64]bool, len(new.Peers))
	for i := range new.Peers {
		n := &new.Peers[i]
		newIDs[n.ID] = true
		o, ok := oldByID[n.ID]
		if !ok {
			d.PeersAdded = append(d.PeersAdded, n.Clone())
		} else if c, changed := diffNode(o, n); changed {
			d.PeersChanged = append(d.PeersChanged, c)
		}
	}
	for i := range old.Peers {
		if !newIDs[old.Peers[i].ID] {
			d.PeersRemoved = append(d.PeersRemoved, old.Peers[i].ID)
		}
	}
	if old.Domain != new.Domain {
		d.Domain = ptr(new.Domain)
	}
	if !old.DNS.Equal(new.DNS) {
		d.DNS = ptr(new.DNS.Clone())
	}
	if !relaysEqual(old.Relays, new.Relays) {
		d.Relays = ptr(slices.Clone(nonNil(new.Relays)))
	}
	if !rawEqual(old.PacketFilter, new.PacketFilter) {
		if d.PacketFilter = canonRaw(new.PacketFilter); d.PacketFilter == nil {
			d.PacketFilter = json.RawMessage("null")
		}
	}
	return d
}

// diffNode returns a patch with the fields that differ between o and n.
func diffNode(o, n *Node) (PeerChange, bool) {
	c := PeerChange{ID: n.ID}
	changed := false
	set := func(differ bool, f func()) {
		if differ {
			f()
			changed = true
		}
	}
	set(o.Name != n.Name, func() { c.Name = ptr(n.Name) })
	set(o.User != n.User, func() { c.User = ptr(n.User) })
	set(o.Key != n.Key, func() { c.Key = ptr(n.Key) })
	set(!slices.Equal(o.Addresses, n.Addresses), func() { c.Addresses = ptr(slices.Clone(n.Addresses)) })
	set(!slices.Equal(o.AllowedIPs, n.AllowedIPs), func() { c.AllowedIPs = ptr(slices.Clone(n.AllowedIPs)) })
	set(!slices.Equal(o.Endpoints, n.Endpoints), func() { c.Endpoints = ptr(slices.Clone(n.Endpoints)) })
	set(o.Online != n.Online, func() { c.Online = ptr(n.Online) })
	set(!o.LastSeen.Equal(n.LastSeen), func() { c.LastSeen = ptr(n.LastSeen) })
	set(!o.Expiry.Equal(n.Expiry), func() { c.Expiry = ptr(n.Expiry) })
	set(o.DiscoKey != n.DiscoKey, func() { c.DiscoKey = ptr(n.DiscoKey) })
	set(!slices.Equal(o.Routes, n.Routes), func() { c.Routes = ptr(slices.Clone(n.Routes)) })
	set(!slices.Equal(o.Tags, n.Tags), func() { c.Tags = ptr(slices.Clone(n.Tags)) })
	set(o.Via != n.Via, func() { c.Via = ptr(n.Via) })
	set(o.RelayPort != n.RelayPort, func() { c.RelayPort = ptr(n.RelayPort) })
	set(!o.Traffic.Equal(n.Traffic), func() { c.Traffic = ptr(n.Traffic) })
	return c, changed
}

// Apply writes the fields c carries into n (slices are copied).
func (c *PeerChange) Apply(n *Node) {
	if c.Name != nil {
		n.Name = *c.Name
	}
	if c.User != nil {
		n.User = *c.User
	}
	if c.Tags != nil {
		n.Tags = slices.Clone(*c.Tags)
		if len(n.Tags) == 0 {
			n.Tags = nil
		}
	}
	if c.Key != nil {
		n.Key = *c.Key
	}
	if c.Addresses != nil {
		n.Addresses = slices.Clone(*c.Addresses)
	}
	if c.AllowedIPs != nil {
		n.AllowedIPs = slices.Clone(*c.AllowedIPs)
	}
	if c.Endpoints != nil {
		n.Endpoints = slices.Clone(*c.Endpoints)
	}
	if c.Online != nil {
		n.Online = *c.Online
	}
	if c.LastSeen != nil {
		n.LastSeen = *c.LastSeen
	}
	if c.Expiry != nil {
		n.Expiry = *c.Expiry
	}
	if c.DiscoKey != nil {
		n.DiscoKey = *c.DiscoKey
	}
	if c.Via != nil {
		n.Via = *c.Via
	}
	if c.Routes != nil {
		n.Routes = slices.Clone(*c.Routes)
		if len(n.Routes) == 0 {
			n.Routes = nil
		}
	}
	if c.RelayPort != nil {
		n.RelayPort = *c.RelayPort
	}
	if c.Traffic != nil {
		n.Traffic = *c.Traffic
	}
}

// check verifies what can be verified without a map: To after From, no
// peer ID listed twice (within or across the added/removed/changed lists),
// and a packet filter that is valid JSON.
func (d *Delta) check() error {
	if d.To <= d.From {
		return fmt.Errorf("%w: version %d -> %d does not advance", ErrInconsistent, d.From, d.To)
	}
	seen := map[uint64]string{}
	mark := func(id uint64, what string) error {
		if prev, dup := seen[id]; dup {
			return fmt.Errorf("%w: peer %d both %s and %s", ErrInconsistent, id, prev, what)
		}
		seen[id] = what
		return nil
	}
	for i := range d.PeersAdded {
		if err := mark(d.PeersAdded[i].ID, "added"); err != nil {
			return err
		}
	}
	for _, id := range d.PeersRemoved {
		if err := mark(id, "removed"); err != nil {
			return err
		}
	}
	for i := range d.PeersChanged {
		if err := mark(d.PeersChanged[i].ID, "changed"); err != nil {
			return err
		}
	}
	if len(d.PacketFilter) > 0 && !json.Valid(d.PacketFilter) {
		return fmt.Errorf("%w: packet filter is not valid JSON", ErrInconsistent)
	}
	return nil
}

// Apply returns the map that results from applying d to m. m is never
// modified. It fails with ErrVersionMismatch when d.From is not m.Version
// (a delta was lost or reordered: the node must resync with a full map),
// and with ErrInconsistent when d adds a peer that exists, removes or
// changes one that does not, lists a peer twice, or yields a map that fails
// Validate (duplicate keys, names or addresses, ...).
func (m *NetworkMap) Apply(d Delta) (*NetworkMap, error) {
	if d.From != m.Version {
		return nil, fmt.Errorf("%w: delta from version %d, map is at %d", ErrVersionMismatch, d.From, m.Version)
	}
	if err := d.check(); err != nil {
		return nil, err
	}
	out := m.Clone()
	out.Version = d.To
	if d.Self != nil {
		out.Self = d.Self.Clone()
	}
	index := make(map[uint64]int, len(out.Peers))
	for i := range out.Peers {
		index[out.Peers[i].ID] = i
	}
	removed := make(map[uint64]bool, len(d.PeersRemoved))
	for _, id := range d.PeersRemoved {
		if _, ok := index[id]; !ok {
			return nil, fmt.Errorf("%w: removing unknown peer %d", ErrInconsistent, id)
		}
		removed[id] = true
	}
	for i := range d.PeersChanged {
		c := &d.PeersChanged[i]
		j, ok := index[c.ID]
		if !ok {
			return nil, fmt.Errorf("%w: changing unknown peer %d", ErrInconsistent, c.ID)
		}
		c.Apply(&out.Peers[j])
	}
	for i := range d.PeersAdded {
		if _, ok := index[d.PeersAdded[i].ID]; ok {
			return nil, fmt.Errorf("%w: adding existing peer %d", ErrInconsistent, d.PeersAdded[i].ID)
		}
	}
	if len(removed) > 0 {
		out.Peers = slices.DeleteFunc(out.Peers, func(n Node) bool { return removed[n.ID] })
	}
	for i := range d.PeersAdded {
		out.Peers = append(out.Peers, d.PeersAdded[i].Clone())
	}
	slices.SortFunc(out.Peers, func(a, b Node) int { return cmpU64(a.ID, b.ID) })
	if d.Domain != nil {
		out.Domain = *d.Domain
	}
	if d.DNS != nil {
		out.DNS = d.DNS.Clone()
	}
	if len(d.PacketFilter) > 0 {
		out.PacketFilter = canonRaw(d.PacketFilter)
	}
	if d.Relays != nil {
		out.Relays = slices.Clone(*d.Relays)
		if len(out.Relays) == 0 {
			out.Relays = nil
		}
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("%w: result: %w", ErrInconsistent, err)
	}
	return out, nil
}
