package daemon

import (
	"bytes"
	"net/netip"
	"slices"

	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/netmap"
)

// filterState is the packet filter the daemon installed in the engine.
//
// The rule (see docs/POLICY.md): the engine enforces the filter of the
// last map applied. A delta that does not change the filter leaves it as
// it is (the server sends a filter change explicitly, never by omission),
// and the map saved on disk, applied at start before any peer is
// configured, restores it after a restart, so neither an update nor a
// restart opens or closes anything by itself. A map whose PacketFilter is
// absent means the deployment has no policy: every packet the cryptokey
// routing accepts passes the rules. A filter this build cannot read fails
// closed for new inbound flows (replies to this node's own flows still
// pass) and is logged.
//
// Whatever the policy, the filter checks each packet's destination (see
// docs/ROUTES.md): this node's own addresses, or a route the map says
// this node routes (approved by an admin; 0.0.0.0/0 and ::/0 on an
// approved exit node). Anything else from a peer is dropped and counted
// (warren_drops_total{reason="destination"}), so a router forwards only
// into what was approved, with or without a policy.
type filterState struct {
	f    *filter.Filter // created once; its connection table survives rule changes
	raw  []byte         // the PacketFilter installed; nil: none
	open bool           // no policy installed (SetNoPolicy)
	dsts filter.Destinations
}

// destinations is where nm lets peers' packets to this node go.
func destinations(nm *netmap.NetworkMap) filter.Destinations {
	var d filter.Destinations
	for _, a := range nm.Self.Addresses {
		d.Local = append(d.Local, a.Addr())
	}
	d.Local = append(d.Local, nm.DNS.Nameservers...) // MagicDNS answers on these
	d.Routes = append([]netip.Prefix(nil), nm.Self.Routes...)
	if devices := gatewayDevices(nm); len(devices) > 0 {
		// A gateway forwards to its WireGuard-only members and from them
		// to any member (wireguard.go); the policy decides what passes.
		d.Routes = append(d.Routes, devices...)
		for i := range nm.Peers {
			if nm.Peers[i].Via == 0 {
				d.Routes = append(d.Routes, nm.Peers[i].Addresses...)
			}
		}
	}
	return d
}

// applyFilterLocked installs nm's packet filter in the engine; d.mu held.
func (d *Daemon) applyFilterLocked(nm *netmap.NetworkMap) {
	fs := &d.filter
	dsts := destinations(nm)
	if fs.f == nil {
		fs.f = filter.New(0)
		fs.f.SetNoPolicy()
		fs.open = true
		fs.f.SetDestinations(dsts)
		d.eng.SetFilter(fs.f)
	} else if !slices.Equal(dsts.Local, fs.dsts.Local) || !slices.Equal(dsts.Routes, fs.dsts.Routes) {
		fs.f.SetDestinations(dsts)
	}
	fs.dsts = dsts
	raw := nm.PacketFilter
	if len(raw) == 0 || string(raw) == "null" {
		if !fs.open {
			fs.f.SetNoPolicy()
			fs.raw, fs.open = nil, true
			d.log.Info("packet filter removed: the deployment has no policy")
		}
		d.setHealthLocked(healthFilter, "")
		return
	}
	if fs.raw != nil && bytes.Equal(raw, fs.raw) {
		return
	}
	spec, err := filter.ParseSpec(raw)
	if err != nil {
		d.log.Error("unreadable packet filter: refusing new inbound flows", "err", err)
		d.setHealthLocked(healthFilter, "unreadable packet filter from the server: "+err.Error())
		spec = &filter.Spec{}
	} else {
		d.setHealthLocked(healthFilter, "")
	}
	fs.f.Set(spec)
	fs.raw, fs.open = bytes.Clone(raw), false
	d.log.Info("packet filter installed", "rules", len(spec.Rules))
}
