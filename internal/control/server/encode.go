package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
)

// This file builds the map stream's messages without running encoding/json
// over the whole world for every stream. The bytes are exactly what
// proto.Encode would produce (encode_test.go checks it):
//
//   - a full map is the encoding of a map with no peers, with the peers'
//     encodings, cached per node in s.enc, spliced into its "peers":[];
//   - a delta that is the same for every stream but its versions is
//     encoded once with versions 0 → 0, and each stream's versions are
//     spliced into that template.

var (
	emptyPeers  = []byte(`"peers":[]`)
	deltaPrefix = []byte(`{"v":1,"mapResponse":{"delta":{"from":0,"to":0`)
)

// nodeJSONLocked returns the cached encoding of a world node; s.mu held.
// fanoutLocked drops the entries of the nodes a delta touches.
func (s *Server) nodeJSONLocked(n *netmap.Node) ([]byte, error) {
	if b, ok := s.enc[n.ID]; ok {
		return b, nil
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, err
	}
	s.enc[n.ID] = b
	return b, nil
}

// encodeResumeLocked returns the framed delta that brings a node holding
// the map summarized by have to the world (netmap.ResumeDelta), whether
// the node is in the world, and whether a resume applies: not for a
// digest that does not parse or a version that cannot be followed. s.mu
// held.
func (s *Server) encodeResumeLocked(id uint64, have *proto.MapDigest) ([]byte, bool, bool, error) {
	peers, err := netmap.ParseDigest(have.Peers)
	if err != nil || have.Version == 0 || have.Version == math.MaxUint64 {
		return nil, true, false, nil
	}
	cur, found := s.fullMapLocked(id, have.Version+1)
	if !found {
		return nil, false, false, nil
	}
	d, err := netmap.ResumeDelta(peers, have.Version, cur, func(n *netmap.Node) (uint64, error) {
		b, err := s.nodeJSONLocked(n)
		if err != nil {
			return 0, err
		}
		return s.nodeHashLocked(n.ID, b), nil
	})
	if err != nil {
		return nil, true, false, err
	}
	b, err := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{Delta: &d}})
	return b, true, err == nil, err
}

// nodeHashLocked is netmap.HashNodeJSON of a world node's cached JSON b,
// cached with it.
func (s *Server) nodeHashLocked(id uint64, b []byte) uint64 {
	if h, ok := s.encHash[id]; ok {
		return h
	}
	h := netmap.HashNodeJSON(b)
	s.encHash[id] = h
	return h
}

// encodeFullLocked returns the framed full map of node id at version from
// the world, and whether the node is in the world; s.mu held.
func (s *Server) encodeFullLocked(id, version uint64) ([]byte, bool, error) {
	self, ok := s.world.Peer(id)
	if !ok {
		return nil, false, nil
	}
	tmpl, err := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{Full: &netmap.NetworkMap{
		Version: version, Domain: s.opts.Domain, DNS: s.dns, Relays: s.relays, Self: *self, PacketFilter: s.filterLocked(id)}}})
	if err != nil {
		return nil, true, err
	}
	body := tmpl[4:]
	at := bytes.Index(body, emptyPeers)
	if at < 0 || bytes.Count(body, emptyPeers) != 1 { // cannot happen: quotes in strings are escaped
		full, _ := s.fullMapLocked(id, version)
		b, err := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{Full: full}})
		return b, true, err
	}
	split := at + len(emptyPeers) - 1 // at the ']'
	peers := make([][]byte, 0, len(s.world.Peers))
	size := len(tmpl)
	for i := range s.world.Peers {
		if s.world.Peers[i].ID == id {
			continue
		}
		b, err := s.nodeJSONLocked(&s.world.Peers[i])
		if err != nil {
			return nil, true, err
		}
		peers = append(peers, b)
		size += len(b) + 1
	}
	out := make([]byte, 4, size)
	out = append(out, body[:split]...)
	for i, b := range peers {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	out = append(out, body[split:]...)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, true, nil
}

// deltaTemplate is a delta encoded once, for many streams.
type deltaTemplate struct {
	rest []byte // the encoding after `..."to":0`, nil if it did not have that prefix
	d    *netmap.Delta
}

func newDeltaTemplate(d *netmap.Delta) (*deltaTemplate, error) {
	d.From, d.To = 0, 0
	b, err := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{Delta: d}})
	if err != nil {
		return nil, err
	}
	t := &deltaTemplate{d: d}
	if bytes.HasPrefix(b[4:], deltaPrefix) {
		t.rest = b[4+len(deltaPrefix):]
	}
	return t, nil
}

// encode returns the framed delta for versions from → to.
func (t *deltaTemplate) encode(from, to uint64) ([]byte, error) {
	if t.rest == nil {
		d := *t.d
		d.From, d.To = from, to
		return proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{Delta: &d}})
	}
	const head = `{"v":1,"mapResponse":{"delta":{"from":`
	out := make([]byte, 4, 4+len(head)+48+len(t.rest))
	out = append(out, head...)
	out = strconv.AppendUint(out, from, 10)
	out = append(out, `,"to":`...)
	out = strconv.AppendUint(out, to, 10)
	out = append(out, t.rest...)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, nil
}
