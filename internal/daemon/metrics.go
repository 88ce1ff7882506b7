package daemon

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/httpguard"
	"github.com/warrenmesh/warren/internal/metrics"
)

// observability is the daemon's metrics registry, live captures and
// recent log lines (metrics.go, capture.go, bundle.go).
type observability struct {
	reg     *prometheus.Registry
	capture captureState
	logs    logRing
}

// initMetrics builds the metrics registry over the engine, the path layer
// and the UDP transport; Run calls it once they exist.
func (d *Daemon) initMetrics() {
	de, ok := d.eng.(*deviceEngine)
	if !ok { // an engine under test: no data-plane collectors
		d.obs.reg = prometheus.NewRegistry()
		return
	}
	d.obs.reg = metrics.Registry(&metrics.Node{
		Device:         de.Device,
		Paths:          de.ms,
		UDP:            de.tr,
		TUN:            de.tunStats,
		Peers:          d.metricPeers,
		CaptureDropped: d.obs.capture.dropped.Load,
		PortMap:        d.portMapClient,
		PeerRelay:      d.PeerRelayStats,
	})
	if d.us.st != nil {
		d.registerNetstackMetrics()
	}
}

// startMetrics serves /metrics on --metrics-listen, if set, until ctx ends.
func (d *Daemon) startMetrics(ctx context.Context) error {
	if d.cfg.MetricsListen == "" {
		return nil
	}
	_, err := metrics.ServeNamed(ctx, d.cfg.MetricsListen, d.obs.reg, d.log, d.ownName)
	return err
}

// metricPeers lists the current map's peers for the per-peer metrics.
func (d *Daemon) metricPeers() []metrics.Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nm == nil {
		return nil
	}
	self := d.nodeKey()
	out := make([]metrics.Peer, 0, len(d.nm.Peers))
	for i := range d.nm.Peers {
		p := &d.nm.Peers[i]
		if p.Key != self {
			out = append(out, metrics.Peer{Key: p.Key, Name: p.Name})
		}
	}
	return out
}

// DebugHandler serves the local API's debug endpoints
// (localapi.DebugBackend).
func (d *Daemon) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /localapi/v1/debug/metrics", metrics.Handler(d.obs.reg))
	mux.HandleFunc("GET /localapi/v1/debug/capture", d.serveCapture)
	mux.HandleFunc("GET /localapi/v1/debug/bundle", d.serveBundle)
	return mux
}

// ownName reports whether name (normalised by httpguard) is one of the
// node's MagicDNS names, so that its metrics listener serves them.
func (d *Daemon) ownName(name string) bool {
	for _, n := range d.dropNames() {
		if httpguard.Hostname(n) == name {
			return true
		}
	}
	return false
}
