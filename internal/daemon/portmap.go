package daemon

import (
	"context"
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/portmap"
)

// startPortMap asks the LAN's gateway (PCP, NAT-PMP or UPnP-IGD) to map the
// engine's UDP port, announces the mapped endpoint with the others while
// it lasts, and returns the function that stops renewing and deletes the
// mapping. With --no-portmap it does nothing.
func (d *Daemon) startPortMap(ctx context.Context) (stop func()) {
	if d.cfg.NoPortMap || d.eng.Port() == 0 {
		return func() {}
	}
	pm := portmap.New(portmap.Options{
		Port:     d.eng.Port(),
		Control:  d.router.SocketControl, // underlay, not via an exit node
		Clock:    d.clk,
		Logger:   d.log,
		OnChange: func() { go d.reportEndpoints() },
	})
	d.pm.Store(pm)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); pm.Run(ctx) }()
	return func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer dcancel()
		if err := pm.Close(dctx); err != nil {
			d.log.Warn("port mapping not deleted", "err", err)
		}
	}
}

// mappedEndpoint is the gateway's mapping of our port, if there is one.
func (d *Daemon) mappedEndpoint() (netip.AddrPort, bool) {
	pm := d.pm.Load()
	if pm == nil {
		return netip.AddrPort{}, false
	}
	ep := pm.External()
	return ep, ep.IsValid()
}

// netcheckPortMap asks the gateway which port mapping protocols it
// answers, and reports the mapping the node holds.
func (d *Daemon) netcheckPortMap(ctx context.Context) *localapi.NetcheckPortMap {
	pm := d.pm.Load()
	if pm == nil {
		return &localapi.NetcheckPortMap{Disabled: true}
	}
	out := &localapi.NetcheckPortMap{}
	r, err := pm.Probe(ctx)
	if err != nil {
		out.Error = err.Error()
	}
	out.Gateway, out.PCP, out.NATPMP, out.UPnP = r.Gateway, r.PCP, r.NATPMP, r.UPnP
	if m, ok := pm.Mapping(); ok {
		out.Protocol, out.Mapped = string(m.Protocol), m.External
	}
	return out
}

// portMapClient is the port mapping client, nil when off or not started.
func (d *Daemon) portMapClient() *portmap.Client { return d.pm.Load() }
