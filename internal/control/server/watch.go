package server

import (
	"time"
)

// NodeState is what watchers of the world (the web console's live nodes
// page) see of one node: its identity and presence as the world holds
// them now.
type NodeState struct {
	ID       uint64
	Name     string
	Online   bool
	LastSeen time.Time
}

// WatchNodes returns a channel that receives a value (coalesced: at most
// one waits) whenever a node of the world changes — joins, leaves, goes
// online or offline, is renamed — as soon as the worker has applied the
// change, and a function that stops the watch. Read the new states with
// Nodes. No store is read for it: the world is what the worker built from
// the change log.
func (s *Server) WatchNodes() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.watchers == nil {
		s.watchers = map[chan struct{}]struct{}{}
	}
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.watchers, ch)
		s.mu.Unlock()
	}
}

// Nodes returns every node of the world, by ID.
func (s *Server) Nodes() []NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeState, len(s.world.Peers))
	for i := range s.world.Peers {
		n := &s.world.Peers[i]
		out[i] = NodeState{ID: n.ID, Name: n.Name, Online: n.Online, LastSeen: n.LastSeen}
	}
	return out
}

// wakeWatchersLocked tells every watcher that the world changed; s.mu
// held. It never blocks: a watcher that has a wake-up pending keeps it.
func (s *Server) wakeWatchersLocked() {
	for ch := range s.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
