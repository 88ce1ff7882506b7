package portmap

import (
	"context"
	"net/netip"
	"sync"
)

// ProbeResult is which port mapping protocols the gateway answered.
type ProbeResult struct {
	Gateway netip.Addr
	PCP     bool
	NATPMP  bool
	UPnP    bool
}

// Probe asks the gateway, with each protocol at once, whether it speaks it
// (PCP ANNOUNCE, NAT-PMP public address request, UPnP search and device
// description). It changes no mapping.
func (c *Client) Probe(ctx context.Context) (ProbeResult, error) {
	gw, self, err := c.opts.Gateway()
	if err != nil {
		return ProbeResult{}, err
	}
	r := ProbeResult{Gateway: gw}
	var wg sync.WaitGroup
	wg.Go(func() { r.PCP = c.probePCP(ctx, gw, self) })
	wg.Go(func() { r.NATPMP = c.probePMP(ctx, gw) })
	wg.Go(func() {
		_, err := c.discoverUPnP(ctx, gw)
		r.UPnP = err == nil
	})
	wg.Wait()
	return r, nil
}
