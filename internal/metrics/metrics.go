// Package metrics exposes Warren's counters to Prometheus. Its collectors
// read the counters the node agent already keeps (device.Stats and
// PeerStats, the path layer's paths and stats, the UDP transport's batch
// counts) at scrape time (the coordination server's and the relay's are in
// package servermetrics, so a node links no server code): nothing on the data plane increments a metric, so a node
// nobody scrapes pays nothing. The package also owns the /metrics HTTP
// listener (loopback unless told otherwise) that `warren daemon`, `warren
// server` and `warren relay` start with --metrics-listen.
package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/warrenmesh/warren/internal/httpguard"
)

// Registry returns a registry with cs and the Go runtime and process
// collectors.
func Registry(cs ...prometheus.Collector) *prometheus.Registry {
	r := prometheus.NewPedanticRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		r.MustRegister(c)
	}
	return r
}

// Handler serves g in the Prometheus text format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// WriteText writes what g gathers in the Prometheus text format.
func WriteText(w io.Writer, g prometheus.Gatherer) error {
	mfs, gerr := g.Gather()
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return gerr
}

// ListenAddr completes a --metrics-listen value: a bare port or ":PORT"
// binds to the IPv4 loopback address.
func ListenAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if _, perr := net.LookupPort("tcp", s); perr != nil {
			return "", errors.New("--metrics-listen: want HOST:PORT or PORT")
		}
		host, port = "", s
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// MaxConnsPerSource caps the metrics listener's concurrent connections
// from one address (scrapers need one or two).
const MaxConnsPerSource = 64

// listenerTimeouts are the metrics listener's (a variable for tests).
var listenerTimeouts = httpguard.PublicTimeouts

// Serve serves /metrics from g on addr (see ListenAddr) until ctx ends. It
// returns once listening; errors after that are logged. Requests must be
// for an IP address, localhost, the machine's host name or one of hosts
// (package httpguard).
func Serve(ctx context.Context, addr string, g prometheus.Gatherer, log *slog.Logger, hosts ...string) (net.Addr, error) {
	return ServeNamed(ctx, addr, g, log, nil, hosts...)
}

// ServeNamed is Serve for a listener whose names change while it runs
// (a node's MagicDNS names): also, if not nil, is asked about a Host
// name that is not an IP literal, localhost, the machine's name or one
// of hosts.
func ServeNamed(ctx context.Context, addr string, g prometheus.Gatherer, log *slog.Logger, also func(name string) bool, hosts ...string) (net.Addr, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr, err := ListenAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if ip, ok := ln.Addr().(*net.TCPAddr); ok && !ip.IP.IsLoopback() {
		log.Warn("metrics are served on a non-loopback address: anyone who reaches it sees peer names and traffic", "addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(g))
	// Only requests for this listener's own names: a web page that
	// rebinds a name to the address must not read peer names and keys.
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	srv := &http.Server{Handler: httpguard.Wrap(mux, httpguard.Policy{Names: hosts, Also: also, Logger: log})}
	listenerTimeouts.Apply(srv)
	ln = httpguard.LimitListener(ln, MaxConnsPerSource, log)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	return ln.Addr(), nil
}

// Desc is shorthand for a metric description without constant labels.
func Desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}
