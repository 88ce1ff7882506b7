package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/peerrelay"
)

var peerRelayServed = Desc("warren_peer_relay_server_packets_total", "This node's peer relay (--relay-server-port): forwarded data, allocations (allocated, refused, replayed, unauthorized) and what it dropped (unknown_session, wrong_source, peer_unbound, rate_limited, malformed).", "event")

// collectPeerRelay reads this node's peer relay counters; s may be nil
// (the node serves no peer relay).
func collectPeerRelay(s *peerrelay.Stats, ch chan<- prometheus.Metric) {
	if s == nil {
		return
	}
	for _, e := range []struct {
		event string
		n     uint64
	}{
		{"forwarded", s.Forwarded.Load()},
		{"allocated", s.Allocated.Load()},
		{"refused", s.Refused.Load()},
		{"replayed", s.Replayed.Load()},
		{"unauthorized", s.Unauthorized.Load()},
		{"unknown_session", s.UnknownSession.Load()},
		{"wrong_source", s.WrongSource.Load()},
		{"peer_unbound", s.PeerUnbound.Load()},
		{"rate_limited", s.RateLimited.Load()},
		{"malformed", s.Malformed.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(peerRelayServed, prometheus.CounterValue, float64(e.n), e.event)
	}
}
