package netmap

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// A peer digest summarizes the peers a node holds so that a server that
// is not the one it streamed from (another replica, docs/HA.md) can
// resume its map with a delta instead of a full map: for each peer, in ID
// order, its ID and the first 8 bytes of the SHA-256 of its JSON encoding
// (as encoding/json writes a Node), 16 bytes big-endian each. A peer whose
// encoding differs on the two sides for any reason is simply sent again.

// DigestEntrySize is the size of one peer's entry in a digest.
const DigestEntrySize = 16

// HashNodeJSON is a peer's hash in a digest, from its JSON encoding.
func HashNodeJSON(b []byte) uint64 {
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// PeerDigest returns the digest of m's peers.
func (m *NetworkMap) PeerDigest() ([]byte, error) {
	out := make([]byte, 0, len(m.Peers)*DigestEntrySize)
	for i := range m.Peers {
		b, err := json.Marshal(&m.Peers[i])
		if err != nil {
			return nil, err
		}
		out = binary.BigEndian.AppendUint64(out, m.Peers[i].ID)
		out = binary.BigEndian.AppendUint64(out, HashNodeJSON(b))
	}
	return out, nil
}

// ErrBadDigest is a digest that is not a whole number of entries in
// strictly increasing ID order.
var ErrBadDigest = errors.New("netmap: malformed peer digest")

// ParseDigest returns the hashes of a digest by peer ID.
func ParseDigest(d []byte) (map[uint64]uint64, error) {
	if len(d)%DigestEntrySize != 0 {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadDigest, len(d))
	}
	out := make(map[uint64]uint64, len(d)/DigestEntrySize)
	var last uint64
	for i := 0; i < len(d); i += DigestEntrySize {
		id := binary.BigEndian.Uint64(d[i:])
		if id == 0 || id <= last {
			return nil, fmt.Errorf("%w: peer IDs not increasing", ErrBadDigest)
		}
		last = id
		out[id] = binary.BigEndian.Uint64(d[i+8:])
	}
	return out, nil
}

// FullChange is a patch that sets every field of a peer to n's.
func FullChange(n *Node) PeerChange {
	c := PeerChange{ID: n.ID}
	c.Name, c.User, c.Key = ptr(n.Name), ptr(n.User), ptr(n.Key)
	c.Addresses, c.AllowedIPs = ptr(nonNil(n.Addresses)), ptr(nonNil(n.AllowedIPs))
	c.Endpoints, c.Routes, c.Tags = ptr(nonNil(n.Endpoints)), ptr(nonNil(n.Routes)), ptr(nonNil(n.Tags))
	c.Online, c.LastSeen, c.Expiry, c.DiscoKey = ptr(n.Online), ptr(n.LastSeen), ptr(n.Expiry), ptr(n.DiscoKey)
	c.Via, c.RelayPort, c.Traffic = ptr(n.Via), ptr(n.RelayPort), ptr(n.Traffic)
	return c
}

// ResumeDelta is the delta that brings a node holding peers summarized by
// have (ParseDigest), at version from, to cur: every peer that differs
// or is missing is sent whole, and everything else of the map (Self,
// domain, DNS, filter, relays) is sent as it is.
func ResumeDelta(have map[uint64]uint64, from uint64, cur *NetworkMap, hash func(*Node) (uint64, error)) (Delta, error) {
	d := Delta{From: from, To: cur.Version, Self: ptr(cur.Self.Clone()), Domain: ptr(cur.Domain), DNS: ptr(cur.DNS.Clone()),
		Relays: ptr(nonNil(cur.Relays)), PacketFilter: canonRaw(cur.PacketFilter)}
	if d.PacketFilter == nil {
		d.PacketFilter = json.RawMessage("null")
	}
	seen := make(map[uint64]bool, len(cur.Peers))
	for i := range cur.Peers {
		n := &cur.Peers[i]
		seen[n.ID] = true
		h, ok := have[n.ID]
		if !ok {
			d.PeersAdded = append(d.PeersAdded, n.Clone())
			continue
		}
		mine, err := hash(n)
		if err != nil {
			return Delta{}, err
		}
		if mine != h {
			d.PeersChanged = append(d.PeersChanged, FullChange(n))
		}
	}
	for id := range have {
		if !seen[id] {
			d.PeersRemoved = append(d.PeersRemoved, id)
		}
	}
	slices.Sort(d.PeersRemoved)
	return d, nil
}
