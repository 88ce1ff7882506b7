package daemon

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
)

// WireGuard-only members (docs/WIREGUARD.md): a phone or router with stock
// WireGuard joins through a gateway node (its netmap.Node.Via). The
// gateway's engine peers with it as a plain WireGuard peer (the path
// layer's PeerInfo.Plain: no disco, no relay, its endpoint the address of
// its last authenticated packet), the kernel forwards between it and the
// tunnel with its own source address (forwarder.setGateway), the filter
// lets its packets to the mesh through and the server compiles the
// member's own rules into the gateway's filter. Every other node puts the
// member's addresses on the gateway's allowed IPs and has no engine peer
// for it. The gateway reports the member's handshakes and traffic to the
// server (reportWireGuard), which shows it online while they are recent.

// wireGuardOnline is how recent a handshake must be for a WireGuard-only
// member to count as online: WireGuard's reject-after time (a session
// with traffic or keepalives is renewed every two minutes).
const wireGuardOnline = 180 * time.Second

// wireGuardReportEvery is how often a gateway looks at its members'
// handshakes; a report goes out when one changed, and at least every
// wireGuardReportAlways while traffic flows.
const (
	wireGuardReportEvery  = 2 * time.Second
	wireGuardReportAlways = 30 * time.Second
)

// viaExtras are, per gateway ID, the addresses of the WireGuard-only
// members other nodes reach through it (usable ones only).
func viaExtras(nm *netmap.NetworkMap, usableNow func(*netmap.Node) bool) map[uint64][]netip.Prefix {
	var out map[uint64][]netip.Prefix
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if p.Via == 0 || p.Via == nm.Self.ID || !usableNow(p) {
			continue
		}
		if out == nil {
			out = map[uint64][]netip.Prefix{}
		}
		out[p.Via] = append(out[p.Via], p.Addresses...)
	}
	return out
}

// gatewayDevices are the addresses of the WireGuard-only members this node
// is the gateway of.
func gatewayDevices(nm *netmap.NetworkMap) []netip.Prefix {
	var out []netip.Prefix
	for i := range nm.Peers {
		if nm.Peers[i].Via == nm.Self.ID && nm.Self.ID != 0 {
			out = append(out, nm.Peers[i].Addresses...)
		}
	}
	return out
}

// gatewayRouter is a Router that can forward for WireGuard-only members
// (the Linux one; userspace mode cannot be a gateway).
type gatewayRouter interface {
	SetGateway(devices []netip.Prefix) error
}

func (r *linuxRouter) SetGateway(devices []netip.Prefix) error { return r.fwd.setGateway(devices) }

// applyGatewayLocked makes the kernel forward for this node's
// WireGuard-only members (none: stops); d.mu held.
func (d *Daemon) applyGatewayLocked(nm *netmap.NetworkMap) {
	g, ok := d.router.(gatewayRouter)
	if !ok {
		return
	}
	var devices []netip.Prefix
	if nm != nil {
		devices = gatewayDevices(nm)
	}
	if err := g.SetGateway(devices); err != nil {
		d.log.Error("forwarding for WireGuard-only members", "err", err)
		d.setHealthLocked(healthForward, "could not forward for WireGuard-only members: "+err.Error())
	}
}

// wireGuardReports is what this node, as gateway, sees of its members now;
// d.mu held.
func (d *Daemon) wireGuardReportsLocked(now time.Time) []proto.WireGuardReport {
	nm := d.nm
	if nm == nil {
		return nil
	}
	var out []proto.WireGuardReport
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if p.Via != nm.Self.ID || nm.Self.ID == 0 {
			continue
		}
		r := proto.WireGuardReport{ID: p.ID}
		if st, ok := d.eng.PeerStats(p.Key.PublicKey); ok {
			r.LastHandshake, r.RxBytes, r.TxBytes = st.LastHandshake.UTC(), st.RxBytes, st.TxBytes
			r.Online = !st.LastHandshake.IsZero() && now.Sub(st.LastHandshake) < wireGuardOnline
		}
		out = append(out, r)
	}
	return out
}

// wireGuardLoop reports this node's WireGuard-only members to the server
// while ctx lives: when their online state or handshake changed, and
// their traffic at most every wireGuardReportAlways.
func (d *Daemon) wireGuardLoop(ctx context.Context) {
	t := clock.NewChanTimer(d.clk)
	t.Reset(wireGuardReportEvery)
	defer t.Stop()
	var last []proto.WireGuardReport
	var lastAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(wireGuardReportEvery)
		}
		now := d.clk.Now()
		d.mu.Lock()
		rs := d.wireGuardReportsLocked(now)
		cc := d.cc
		d.mu.Unlock()
		if cc == nil || (len(rs) == 0 && len(last) == 0) {
			continue
		}
		same := slices.EqualFunc(rs, last, func(a, b proto.WireGuardReport) bool {
			return a.ID == b.ID && a.Online == b.Online && a.LastHandshake.Equal(b.LastHandshake)
		})
		// Also every wireGuardReportAlways: the traffic, and a new stream
		// after the server marked the members offline with this node.
		if same && now.Sub(lastAt) < wireGuardReportAlways {
			continue
		}
		if err := cc.SetWireGuard(rs); err == nil {
			last, lastAt = rs, now
		}
	}
}
