package netmap

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// This file holds the JSON encoding. Wire structs fix the field names, and
// encoders normalise what would otherwise make equal values encode
// differently: nil lists become [], times become UTC, keys base64, and the
// packet filter its compact form.

// wireKey is a public key encoded as standard base64.
type wireKey noise.PublicKey

func (k wireKey) MarshalText() ([]byte, error) { return []byte(noise.PublicKey(k).String()), nil }

func (k *wireKey) UnmarshalText(b []byte) error {
	pk, err := noise.ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = wireKey(pk)
	return nil
}

// The helpers below move typed key pointers to and from wireKey (nil
// stays nil): the wire form is the wrapped key's base64.

func nodeOut(k *pubkey.Node) *wireKey {
	if k == nil {
		return nil
	}
	w := wireKey(k.PublicKey)
	return &w
}

func discoPtrOut(k *pubkey.Disco) *wireKey {
	if k == nil {
		return nil
	}
	w := wireKey(k.PublicKey)
	return &w
}

func nodeIn(w *wireKey) *pubkey.Node {
	if w == nil {
		return nil
	}
	return &pubkey.Node{PublicKey: noise.PublicKey(*w)}
}

func discoPtrIn(w *wireKey) *pubkey.Disco {
	if w == nil {
		return nil
	}
	return &pubkey.Disco{PublicKey: noise.PublicKey(*w)}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type wireNode struct {
	ID         uint64           `json:"id"`
	Name       string           `json:"name"`
	User       string           `json:"user"`
	Key        wireKey          `json:"key"`
	Addresses  []netip.Prefix   `json:"addresses"`
	AllowedIPs []netip.Prefix   `json:"allowedIPs"`
	Endpoints  []netip.AddrPort `json:"endpoints"`
	Online     bool             `json:"online"`
	LastSeen   time.Time        `json:"lastSeen"`
	Expiry     time.Time        `json:"expiry"`
	DiscoKey   *wireKey         `json:"discoKey,omitempty"`
	Routes     []netip.Prefix   `json:"routes,omitempty"`
	Tags       []string         `json:"tags,omitempty"`
	Via        uint64           `json:"via,omitempty"`
	RelayPort  uint16           `json:"relayPort,omitempty"`
	Traffic    *Traffic         `json:"traffic,omitempty"`
}

// trafficOut is a node's traffic on the wire: absent when there is none
// (so maps without WireGuard-only members encode as before), UTC.
func trafficOut(t Traffic) *Traffic {
	if t.IsZero() {
		return nil
	}
	return trafficUTC(&t)
}

func trafficUTC(t *Traffic) *Traffic {
	if t == nil {
		return nil
	}
	u := *t
	u.At = u.At.UTC()
	return &u
}

func discoOut(k pubkey.Disco) *wireKey {
	if k.IsZero() {
		return nil
	}
	w := wireKey(k.PublicKey)
	return &w
}

func discoIn(w *wireKey) pubkey.Disco {
	if w == nil {
		return pubkey.Disco{}
	}
	return pubkey.Disco{PublicKey: noise.PublicKey(*w)}
}

// MarshalJSON implements json.Marshaler.
func (n Node) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireNode{
		ID: n.ID, Name: n.Name, User: n.User, Key: wireKey(n.Key.PublicKey),
		Addresses: nonNil(n.Addresses), AllowedIPs: nonNil(n.AllowedIPs), Endpoints: nonNil(n.Endpoints),
		Online: n.Online, LastSeen: n.LastSeen.UTC(), Expiry: n.Expiry.UTC(), DiscoKey: discoOut(n.DiscoKey),
		Routes: n.Routes, Tags: n.Tags, Via: n.Via, RelayPort: n.RelayPort, Traffic: trafficOut(n.Traffic),
	})
}

// UnmarshalJSON implements json.Unmarshaler.
func (n *Node) UnmarshalJSON(b []byte) error {
	var w wireNode
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*n = Node{
		ID: w.ID, Name: w.Name, User: w.User, Key: pubkey.Node{PublicKey: noise.PublicKey(w.Key)},
		Addresses: w.Addresses, AllowedIPs: w.AllowedIPs, Endpoints: w.Endpoints,
		Online: w.Online, LastSeen: w.LastSeen.UTC(), Expiry: w.Expiry.UTC(), DiscoKey: discoIn(w.DiscoKey),
		Routes: w.Routes, Tags: w.Tags, Via: w.Via, RelayPort: w.RelayPort,
	}
	if w.Traffic != nil {
		n.Traffic = *trafficUTC(w.Traffic)
	}
	if len(n.Routes) == 0 {
		n.Routes = nil
	}
	if len(n.Tags) == 0 {
		n.Tags = nil
	}
	return nil
}

// MarshalJSON implements json.Marshaler.
func (c DNSConfig) MarshalJSON() ([]byte, error) {
	type plain DNSConfig
	routes := make([]DNSRoute, len(c.Routes))
	for i, r := range c.Routes {
		routes[i] = DNSRoute{Domain: r.Domain, Resolvers: nonNil(r.Resolvers)}
	}
	return json.Marshal(plain{Nameservers: nonNil(c.Nameservers), SearchDomains: nonNil(c.SearchDomains),
		Records: nonNil(c.Records), Zones: nonNil(c.Zones), Routes: routes})
}

type wireMap struct {
	ProtocolVersion int             `json:"protocolVersion"`
	Version         uint64          `json:"version"`
	Self            Node            `json:"self"`
	Peers           []Node          `json:"peers"`
	Domain          string          `json:"domain"`
	DNS             DNSConfig       `json:"dns"`
	PacketFilter    json.RawMessage `json:"packetFilter,omitempty"`
	Relays          []RelayRegion   `json:"relays,omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (m NetworkMap) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireMap{
		ProtocolVersion: ProtocolVersion, Version: m.Version, Self: m.Self, Peers: nonNil(m.Peers),
		Domain: m.Domain, DNS: m.DNS, PacketFilter: canonRaw(m.PacketFilter), Relays: m.Relays,
	})
}

// UnmarshalJSON implements json.Unmarshaler. It refuses another protocol
// version but does not Validate; use DecodeNetworkMap for untrusted input.
func (m *NetworkMap) UnmarshalJSON(b []byte) error {
	var w wireMap
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.ProtocolVersion != ProtocolVersion {
		return fmt.Errorf("netmap: protocol version %d, want %d", w.ProtocolVersion, ProtocolVersion)
	}
	*m = NetworkMap{Version: w.Version, Self: w.Self, Peers: w.Peers, Domain: w.Domain, DNS: w.DNS,
		PacketFilter: canonRaw(w.PacketFilter), Relays: w.Relays}
	return nil
}

// DecodeNetworkMap parses and validates a map received from the server or
// read from disk.
func DecodeNetworkMap(b []byte) (*NetworkMap, error) {
	m := new(NetworkMap)
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

type wirePeerChange struct {
	ID         uint64            `json:"id"`
	Name       *string           `json:"name,omitempty"`
	User       *string           `json:"user,omitempty"`
	Key        *wireKey          `json:"key,omitempty"`
	Addresses  *[]netip.Prefix   `json:"addresses,omitempty"`
	AllowedIPs *[]netip.Prefix   `json:"allowedIPs,omitempty"`
	Endpoints  *[]netip.AddrPort `json:"endpoints,omitempty"`
	Online     *bool             `json:"online,omitempty"`
	LastSeen   *time.Time        `json:"lastSeen,omitempty"`
	Expiry     *time.Time        `json:"expiry,omitempty"`
	DiscoKey   *wireKey          `json:"discoKey,omitempty"`
	Routes     *[]netip.Prefix   `json:"routes,omitempty"`
	Tags       *[]string         `json:"tags,omitempty"`
	Via        *uint64           `json:"via,omitempty"`
	RelayPort  *uint16           `json:"relayPort,omitempty"`
	Traffic    *Traffic          `json:"traffic,omitempty"`
}

func nonNilPtr[T any](p *[]T) *[]T {
	if p == nil {
		return nil
	}
	s := nonNil(*p)
	return &s
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// MarshalJSON implements json.Marshaler.
func (c PeerChange) MarshalJSON() ([]byte, error) {
	return json.Marshal(wirePeerChange{
		ID: c.ID, Name: c.Name, User: c.User, Key: nodeOut(c.Key),
		Addresses: nonNilPtr(c.Addresses), AllowedIPs: nonNilPtr(c.AllowedIPs), Endpoints: nonNilPtr(c.Endpoints),
		Online: c.Online, LastSeen: utcPtr(c.LastSeen), Expiry: utcPtr(c.Expiry), DiscoKey: discoPtrOut(c.DiscoKey),
		Routes: nonNilPtr(c.Routes), Tags: nonNilPtr(c.Tags), Via: c.Via, RelayPort: c.RelayPort, Traffic: trafficUTC(c.Traffic),
	})
}

// UnmarshalJSON implements json.Unmarshaler. A field given as null is
// treated as absent (unchanged); clear a list with [].
func (c *PeerChange) UnmarshalJSON(b []byte) error {
	var w wirePeerChange
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*c = PeerChange{
		ID: w.ID, Name: w.Name, User: w.User, Key: nodeIn(w.Key),
		Addresses: w.Addresses, AllowedIPs: w.AllowedIPs, Endpoints: w.Endpoints,
		Online: w.Online, LastSeen: utcPtr(w.LastSeen), Expiry: utcPtr(w.Expiry), DiscoKey: discoPtrIn(w.DiscoKey),
		Routes: w.Routes, Tags: w.Tags, Via: w.Via, RelayPort: w.RelayPort, Traffic: trafficUTC(w.Traffic),
	}
	return nil
}

// DecodeDelta parses a delta received from the server and checks its shape
// (To after From, no ID listed twice). Whether it fits a map is Apply's job.
func DecodeDelta(b []byte) (*Delta, error) {
	d := new(Delta)
	if err := json.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := d.check(); err != nil {
		return nil, err
	}
	return d, nil
}
