package server

import (
	"context"
	"fmt"
	"slices"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// The relay map of the nodes' maps. A server alone offers Options.Relays
// as given. Replicas offer the embedded relays of every live replica
// (store.ReplicaRelays: each replica registers its own,
// Options.ReplicaRelay, and a replica's relay leaves the store when it
// leaves or its heartbeat lapses), oldest registration first, then
// Options.Relays. Every replica builds the same list, so every node has
// the same home relay (a node's home is the first region) wherever it
// streams from, and nodes that can only reach each other through a relay
// meet there; when the home relay's replica dies, its region leaves every
// map within a lapse and the nodes move to the next together.

// ReplicaRelayStore is what a replica with relays uses of its store.
type ReplicaRelayStore interface {
	RegisterRelay(ctx context.Context, replica string, r store.ReplicaRelay) error
	ReplicaRelays(ctx context.Context) ([]store.ReplicaRelay, error)
}

var _ ReplicaRelayStore = (*store.Store)(nil)

// readRelays reads the relay list of a replica's maps (nil for a server
// alone: Options.Relays never change).
func (s *Server) readRelays(ctx context.Context) (*[]netmap.RelayRegion, error) {
	rs, ok := s.st.(ReplicaRelayStore)
	if s.rep.rs == nil || !ok {
		return nil, nil
	}
	stored, err := rs.ReplicaRelays(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]netmap.RelayRegion, 0, len(stored)+len(s.opts.Relays))
	ids := map[int]bool{}
	for _, r := range stored {
		k, err := noise.ParsePublicKey(r.Key)
		if err != nil || k.IsZero() {
			s.log.Warn("control: a replica's relay has an invalid key; left out of the relay map", "url", r.URL, "replica", r.Replica)
			continue
		}
		out = append(out, netmap.RelayRegion{ID: r.Region, Code: fmt.Sprintf("replica%d", r.Region-store.ReplicaRelayRegionBase),
			URL: r.URL, Key: pubkey.Relay{PublicKey: k}, STUN: r.STUN})
		ids[r.Region] = true
	}
	for _, r := range s.opts.Relays {
		if !ids[r.ID] {
			out = append(out, r)
		}
	}
	return &out, nil
}

// setRelaysLocked queues a relay list that differs from the one in force;
// s.mu held.
func (s *Server) setRelaysLocked(rs []netmap.RelayRegion) {
	if len(rs) == 0 {
		rs = nil
	}
	if !slices.Equal(rs, s.relays) {
		s.relays = rs
		s.relaysDirty = true
		s.kickFanout()
	}
}

// registerRelay registers this replica's relay (Options.ReplicaRelay) if
// it has one and it is not registered yet; the heartbeat goroutine calls
// it after each heartbeat that succeeded.
func (s *Server) registerRelay(ctx context.Context) {
	r := s.opts.ReplicaRelay
	rs, ok := s.st.(ReplicaRelayStore)
	if r == nil || !ok || s.rep.relayRegistered {
		return
	}
	c, cancel := context.WithTimeout(ctx, s.opts.ReplicaLapse)
	defer cancel()
	err := rs.RegisterRelay(c, s.opts.Replica, store.ReplicaRelay{URL: r.URL, STUN: r.STUN, Key: r.Key.String()})
	if err != nil {
		s.log.Error("control: registering this replica's relay failed", "err", err)
		return
	}
	s.rep.relayRegistered = true
}
