package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/portmap"
)

var (
	portmapIgnored = Desc("warren_portmap_replies_ignored_total", "Port mapping replies ignored, by reason: source (not the gateway's address and port), nonce (PCP), mismatch (opcode, port, protocol; a UPnP service off the gateway), epoch (inconsistent with the last: a gateway restart or a forgery), malformed.", "reason")
	portmapMapped  = Desc("warren_portmap_mapped", "1 while the gateway maps the node's UDP port with the protocol, 0 for the others.", "protocol")
)

func describePortMap(ch chan<- *prometheus.Desc) {
	ch <- portmapIgnored
	ch <- portmapMapped
}

// collectPortMap reads the port mapping client's counters and mapping;
// pm may be nil (port mapping off).
func collectPortMap(pm *portmap.Client, ch chan<- prometheus.Metric) {
	if pm == nil {
		return
	}
	for _, r := range []struct {
		reason string
		n      uint64
	}{
		{"source", pm.Stats.WrongSource.Load()},
		{"nonce", pm.Stats.WrongNonce.Load()},
		{"mismatch", pm.Stats.Mismatch.Load()},
		{"epoch", pm.Stats.BadEpoch.Load()},
		{"malformed", pm.Stats.Malformed.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(portmapIgnored, prometheus.CounterValue, float64(r.n), r.reason)
	}
	m, ok := pm.Mapping()
	for _, p := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
		v := 0.0
		if ok && m.Protocol == p {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(portmapMapped, prometheus.GaugeValue, v, string(p))
	}
}
