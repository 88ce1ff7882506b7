package server

import (
	"time"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/store"
)

// A WireGuard-only member's traffic, as its gateway reports it, goes to
// the other members in their maps (netmap.Node.Traffic) so that their
// `warren status` shows it. The counters move with every packet and the
// gateway reports them every 30 s at most, but every change of a map node
// is a delta to every stream, so the world takes a member's new counters
// at most once per Options.TrafficInterval: a change that comes sooner is
// held (the world keeps the previous counters) and goes out when the
// interval since the last one has passed, by the worker's timer if no
// other change of the node comes first. What is held is always the
// latest stored report (s.nodes), so members see the latest counters, at
// most one interval late. The rest of the node (online, handshake) is not
// held.

// DefaultTrafficInterval is Options.TrafficInterval's default.
const DefaultTrafficInterval = time.Minute

// trafficState is when the world last took each member's new counters
// and which members have newer ones held; s.mu guards it.
type trafficState struct {
	last map[uint64]time.Time // when the world took the node's counters
	due  map[uint64]time.Time // held counters may go out at this time
}

// trafficOf is a stored node's traffic as the maps carry it.
func trafficOf(n *store.Node) netmap.Traffic {
	if n.Via == 0 || n.TrafficAt.IsZero() {
		return netmap.Traffic{}
	}
	return netmap.Traffic{RxBytes: uint64(max(n.RxBytes, 0)), TxBytes: uint64(max(n.TxBytes, 0)), At: n.TrafficAt}
}

// gateTrafficLocked decides the traffic nn shows as it replaces old in
// the world (old nil: nn is new to the world, and shows its counters at
// once): nn's own if they are old's or the interval since the last change
// has passed, else old's, with nn's held; s.mu held.
func (s *Server) gateTrafficLocked(nn, old *netmap.Node) {
	t := &s.traffic
	if t.last == nil {
		t.last, t.due = map[uint64]time.Time{}, map[uint64]time.Time{}
	}
	id, now := nn.ID, s.clk.Now()
	switch {
	case old != nil && nn.Traffic.Equal(old.Traffic):
		delete(t.due, id)
		return
	case old != nil:
		if last, ok := t.last[id]; ok && now.Sub(last) < s.opts.TrafficInterval {
			nn.Traffic = old.Traffic
			t.due[id] = last.Add(s.opts.TrafficInterval)
			s.stats.trafficHeld.Add(1)
			return
		}
		s.stats.trafficPublished.Add(1)
	}
	delete(t.due, id)
	if !nn.Traffic.IsZero() {
		t.last[id] = now
	}
}

// forgetTrafficLocked drops what is kept for node id (it left the
// world); s.mu held.
func (s *Server) forgetTrafficLocked(id uint64) {
	delete(s.traffic.last, id)
	delete(s.traffic.due, id)
}

// publishTrafficLocked puts into the world the held counters whose time
// has come, and returns how long until the next one does (an hour if
// none is held); s.mu held.
func (s *Server) publishTrafficLocked() time.Duration {
	t := &s.traffic
	now := s.clk.Now()
	next := time.Hour
	for id, due := range t.due {
		if wait := due.Sub(now); wait > 0 {
			next = min(next, wait)
			continue
		}
		delete(t.due, id)
		n := s.nodes[id]
		p, ok := s.world.Peer(id)
		if n == nil || !ok {
			continue
		}
		if cur := trafficOf(n); !cur.Equal(p.Traffic) {
			s.markDirtyLocked(id, s.world)
			p.Traffic = cur
			t.last[id] = now
			s.stats.trafficPublished.Add(1)
			s.kickFanout()
		}
	}
	return next
}
