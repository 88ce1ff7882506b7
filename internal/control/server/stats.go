package server

import (
	"sync/atomic"
	"time"
)

// Stats is a snapshot of the server's counters, for metrics.
type Stats struct {
	NodesOnline  int    // nodes with a map stream open here now
	HoldsDuties  bool   // this server runs the singleton duties (replica.go); always, alone
	FullMapsSent uint64 // full maps queued to streams
	DeltasSent   uint64 // deltas queued to streams
	// Resumes are streams that began with a delta from the map the node
	// held (from another replica or an earlier stream) instead of a full
	// map.
	Resumes uint64
	// EndpointUpdates are the endpoint reports received on map streams;
	// EndpointWrites the (merged) ones applied to the store, at most one
	// per node per Options.EndpointInterval; EndpointsCoalesced the
	// reports merged into one not yet applied.
	EndpointUpdates, EndpointWrites, EndpointsCoalesced uint64
	// StreamWrite is how long writing one frame to a node's stream took
	// (network and the node's reading included).
	StreamWrite Latency
	// TrafficPublished are the changes of WireGuard-only members'
	// traffic put into the maps (traffic.go); TrafficHeld the stored
	// changes held back because the last was less than
	// Options.TrafficInterval ago.
	TrafficPublished, TrafficHeld uint64
	// StoreRead is how long one pass of following the store took: reading
	// the change log and what it names (the whole world at start).
	StoreRead Latency
}

// LatencyBuckets are the upper bounds of the latency histograms.
var LatencyBuckets = []time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// Latency is a histogram snapshot: Counts[i] observations at most
// LatencyBuckets[i] (not cumulative), the last entry those above every
// bound.
type Latency struct {
	Counts []uint64
	Sum    time.Duration
}

// latency is a lock-free histogram over LatencyBuckets.
type latency struct {
	counts [16]atomic.Uint64 // len(LatencyBuckets)+1
	sum    atomic.Int64
}

func (l *latency) observe(d time.Duration) {
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sum.Add(int64(d))
}

func (l *latency) since(start time.Time) { l.observe(time.Since(start)) }

func (l *latency) snapshot() Latency {
	s := Latency{Counts: make([]uint64, len(LatencyBuckets)+1), Sum: time.Duration(l.sum.Load())}
	for i := range s.Counts {
		s.Counts[i] = l.counts[i].Load()
	}
	return s
}

// serverStats are the counters behind Stats.
type serverStats struct {
	fullMaps, deltas   atomic.Uint64
	resumes            atomic.Uint64
	endpointUpdates    atomic.Uint64
	endpointWrites     atomic.Uint64
	endpointsCoalesced atomic.Uint64
	trafficPublished   atomic.Uint64
	trafficHeld        atomic.Uint64
	streamWrite        latency
	storeRead          latency
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	online := 0
	for _, ss := range s.sessions {
		if !ss.isDead() {
			online++
		}
	}
	s.mu.Unlock()
	return Stats{NodesOnline: online, HoldsDuties: s.hasDuties(), FullMapsSent: s.stats.fullMaps.Load(), DeltasSent: s.stats.deltas.Load(), Resumes: s.stats.resumes.Load(),
		EndpointUpdates: s.stats.endpointUpdates.Load(), EndpointWrites: s.stats.endpointWrites.Load(), EndpointsCoalesced: s.stats.endpointsCoalesced.Load(),
		TrafficPublished: s.stats.trafficPublished.Load(), TrafficHeld: s.stats.trafficHeld.Load(),
		StreamWrite: s.stats.streamWrite.snapshot(), StoreRead: s.stats.storeRead.snapshot()}
}
