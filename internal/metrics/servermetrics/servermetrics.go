// Package servermetrics holds the Prometheus collectors of the
// coordination server (server.Stats) and of the relay server
// (relayserver.Stats), read at scrape time like those of package metrics,
// which owns the listener and the registry. It is apart from package
// metrics so that a node, which links metrics, links no server code.
package servermetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/metrics"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
)

// Server is the coordination server's collector.
type Server struct{ S *server.Server }

var (
	srvOnline   = metrics.Desc("warren_server_nodes_online", "Nodes with a map stream open on this server.")
	srvDuties   = metrics.Desc("warren_server_duties", "1 if this server runs the singleton duties (expiry of lapsed replicas' nodes, ephemeral sweep, change-log pruning): always for a server alone, one replica at a time on PostgreSQL (docs/HA.md).")
	srvMaps     = metrics.Desc("warren_server_netmaps_sent_total", "Network maps queued to node streams, by kind (full, delta, resume: the first message of a stream resumed from the map the node held).", "kind")
	srvStream   = metrics.Desc("warren_server_stream_write_seconds", "Time to write one frame to a node's map stream.")
	srvStore    = metrics.Desc("warren_server_store_read_seconds", "Time of the store reads behind a map change (world reload or one node).")
	srvEndpts   = metrics.Desc("warren_server_endpoint_reports_total", "Endpoint reports from nodes' map streams, by what became of them: received, written (to the store and fanned out, at most one per node per second), merged (into a later one).", "result")
	srvTraffic  = metrics.Desc("warren_server_wireguard_traffic_changes_total", "Changes of WireGuard-only members' traffic as their gateways reported it, by what became of them: published (into the maps), held (less than wg_traffic_interval after the last; the latest goes out when it has passed).", "result")
	relayDescs  = []*prometheus.Desc{relClients, relSessions, relPackets, relBytes, relDrops, relClosed}
	relClients  = metrics.Desc("warren_relay_clients", "Relay sessions connected now.")
	relSessions = metrics.Desc("warren_relay_sessions_total", "Relay sessions, by event: accepted, refused (not vouched for), replaced.", "event")
	relPackets  = metrics.Desc("warren_relay_server_packets_total", "Packets through the relay, by direction: in (clients asked to send), out (written to receivers).", "dir")
	relBytes    = metrics.Desc("warren_relay_server_bytes_total", "Packet bytes through the relay, by direction.", "dir")
	relDrops    = metrics.Desc("warren_relay_server_drops_total", "Packets the relay dropped, by reason.", "reason")
	relClosed   = metrics.Desc("warren_relay_server_closed_total", "Sessions the relay closed, by reason.", "reason")
)

// Describe implements prometheus.Collector.
func (s Server) Describe(ch chan<- *prometheus.Desc) {
	ch <- srvOnline
	ch <- srvDuties
	ch <- srvMaps
	ch <- srvStream
	ch <- srvStore
	ch <- srvEndpts
	ch <- srvTraffic
}

// Collect implements prometheus.Collector.
func (s Server) Collect(ch chan<- prometheus.Metric) {
	st := s.S.Stats()
	ch <- prometheus.MustNewConstMetric(srvOnline, prometheus.GaugeValue, float64(st.NodesOnline))
	duties := 0.0
	if st.HoldsDuties {
		duties = 1
	}
	ch <- prometheus.MustNewConstMetric(srvDuties, prometheus.GaugeValue, duties)
	ch <- prometheus.MustNewConstMetric(srvMaps, prometheus.CounterValue, float64(st.FullMapsSent), "full")
	ch <- prometheus.MustNewConstMetric(srvMaps, prometheus.CounterValue, float64(st.DeltasSent), "delta")
	ch <- prometheus.MustNewConstMetric(srvMaps, prometheus.CounterValue, float64(st.Resumes), "resume")
	ch <- prometheus.MustNewConstMetric(srvEndpts, prometheus.CounterValue, float64(st.EndpointUpdates), "received")
	ch <- prometheus.MustNewConstMetric(srvEndpts, prometheus.CounterValue, float64(st.EndpointWrites), "written")
	ch <- prometheus.MustNewConstMetric(srvEndpts, prometheus.CounterValue, float64(st.EndpointsCoalesced), "merged")
	ch <- prometheus.MustNewConstMetric(srvTraffic, prometheus.CounterValue, float64(st.TrafficPublished), "published")
	ch <- prometheus.MustNewConstMetric(srvTraffic, prometheus.CounterValue, float64(st.TrafficHeld), "held")
	ch <- histogram(srvStream, st.StreamWrite)
	ch <- histogram(srvStore, st.StoreRead)
}

// histogram turns a server latency snapshot into a Prometheus histogram.
func histogram(d *prometheus.Desc, l server.Latency) prometheus.Metric {
	buckets := make(map[float64]uint64, len(server.LatencyBuckets))
	var cum uint64
	for i, b := range server.LatencyBuckets {
		cum += l.Counts[i]
		buckets[b.Seconds()] = cum
	}
	count := cum + l.Counts[len(server.LatencyBuckets)]
	return prometheus.MustNewConstHistogram(d, count, l.Sum.Seconds(), buckets)
}

// Relay is the relay server's collector.
type Relay struct{ R *relayserver.Server }

// Describe implements prometheus.Collector.
func (r Relay) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range relayDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r Relay) Collect(ch chan<- prometheus.Metric) {
	st := r.R.Stats()
	c := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	ch <- prometheus.MustNewConstMetric(relClients, prometheus.GaugeValue, float64(st.Clients))
	c(relSessions, st.Accepted, "accepted")
	c(relSessions, st.Refused, "refused")
	c(relSessions, st.Replaced, "replaced")
	c(relPackets, st.PacketsIn, "in")
	c(relPackets, st.PacketsOut, "out")
	c(relBytes, st.BytesIn, "in")
	c(relBytes, st.BytesOut, "out")
	c(relDrops, st.DropsNoPeer, "no_peer")
	c(relDrops, st.DropsQueueFull, "queue_full")
	c(relDrops, st.DropsRateLimit, "rate_limit")
	c(relClosed, st.ClosedOversize, "oversize")
	c(relClosed, st.ClosedProtocol, "protocol")
	c(relClosed, st.ClosedNotVouched, "not_vouched")
	c(relClosed, st.ClosedWriteTimeout, "write_timeout")
}
