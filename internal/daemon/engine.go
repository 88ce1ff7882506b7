package daemon

import (
	"net/netip"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/uapi"
)

// appliedPeer is what the engine was last told about one peer.
type appliedPeer struct {
	endpoints []netip.AddrPort // as reported in the map
	allowed   []netip.Prefix
	disco     pubkey.Disco // the peer's path-probe key: new with each run of its daemon
}

// nodeKey is this node's own key, as the map names it.
func (d *Daemon) nodeKey() pubkey.Node { return pubkey.Node{PublicKey: d.key.PublicKey()} }

// usable reports whether a peer belongs in the engine now.
func usable(n *netmap.Node, self pubkey.Node, now time.Time) bool {
	if n.Key == self || n.Key.IsZero() {
		return false
	}
	return n.Expiry.IsZero() || n.Expiry.After(now)
}

// pickEndpoint chooses where to send a peer's first handshake: the first
// reported endpoint of a family this host has a route for, IPv4 first. The
// engine then follows the peer if it roams.
func pickEndpoint(eps []netip.AddrPort) netip.AddrPort {
	for _, e := range eps {
		if e.Addr().Is4() || e.Addr().Is4In6() {
			return e
		}
	}
	if len(eps) > 0 {
		return eps[0]
	}
	return netip.AddrPort{}
}

// applyMapLocked makes the engine's peers and the interface's addresses and
// routes match nm, changing only what differs so existing sessions keep
// running; d.mu held.
func (d *Daemon) applyMapLocked(nm *netmap.NetworkMap) {
	d.nm = nm
	d.state = localapi.StateRunning
	// A map came: the server accepts this node.
	d.setHealthLocked(healthControl, "")
	d.setHealthLocked(healthLogout, "")
	d.applyFilterLocked(nm) // before any new peer can send
	self := d.nodeKey()
	now := d.clk.Now()
	d.selectExitLocked(nm, now) // which peer's default routes to use

	want := map[pubkey.Node]*netmap.Node{}
	usableNow := func(p *netmap.Node) bool { return usable(p, self, now) }
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if p.Via != 0 && p.Via != nm.Self.ID {
			continue // a WireGuard-only member of another gateway (wireguard.go)
		}
		if usableNow(p) {
			want[p.Key] = p
		}
	}
	via := viaExtras(nm, usableNow)
	cfg := &uapi.Config{}
	for k := range d.applied {
		if want[k] == nil {
			cfg.Peers = append(cfg.Peers, uapi.PeerConfig{PublicKey: k.PublicKey, Remove: true})
			delete(d.applied, k)
		}
	}
	var routes, tunnel []netip.Prefix
	for k, p := range want {
		routes = append(routes, p.AllowedIPs...)
		// The peer's routes this node uses (routes.go) are allowed IPs
		// too, and go into the tunnel routing table.
		allowed := p.AllowedIPs
		if extra := d.peerRoutesLocked(p); len(extra) > 0 {
			tunnel = append(tunnel, extra...)
			allowed = append(slices.Clone(p.AllowedIPs), extra...)
		}
		if members := via[p.ID]; len(members) > 0 {
			// The WireGuard-only members reached through this gateway.
			routes = append(routes, members...)
			allowed = append(slices.Clone(allowed), members...)
		}
		old, had := d.applied[k]
		if had && !old.disco.IsZero() && old.disco != p.DiscoKey {
			// The peer's daemon restarted (a new disco key): its sessions
			// are gone, so drop ours too; the next packet handshakes at
			// once instead of going unanswered until WireGuard's 15 s
			// rekey timeout (an exit node coming back, routes.go).
			cfg.Peers = append(cfg.Peers, uapi.PeerConfig{PublicKey: k.PublicKey, Remove: true})
			had = false
		}
		pc := uapi.PeerConfig{PublicKey: k.PublicKey}
		changed := !had
		if !had {
			// The path layer picks the address (direct or relay) per packet.
			pc.Endpoint = magicsock.PeerEndpoint(k)
		}
		if !had || !slices.Equal(old.allowed, allowed) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = slices.Clone(allowed)
			changed = true
		}
		if changed {
			cfg.Peers = append(cfg.Peers, pc)
		}
		d.applied[k] = appliedPeer{endpoints: slices.Clone(p.Endpoints), allowed: slices.Clone(allowed), disco: p.DiscoKey}
	}
	d.applyPathsLocked(nm, want)
	// Removals first (they free allowed IPs a changed peer may take over).
	slices.SortStableFunc(cfg.Peers, func(a, b uapi.PeerConfig) int {
		switch {
		case a.Remove == b.Remove:
			return 0
		case a.Remove:
			return -1
		}
		return 1
	})
	if len(cfg.Peers) > 0 {
		if err := d.eng.Apply(cfg); err != nil {
			d.log.Error("apply peers", "err", err)
			d.setHealthLocked(healthPeers, "could not configure peers: "+err.Error())
		} else {
			d.setHealthLocked(healthPeers, "")
		}
	}
	addrs := slices.Clone(nm.Self.Addresses)
	for _, a := range nm.DNS.Nameservers { // MagicDNS answers on these
		addrs = append(addrs, netip.PrefixFrom(a, a.BitLen()))
	}
	if err := d.router.SetAddresses(addrs, routes); err != nil {
		d.log.Error("configure interface", "err", err)
		d.setHealthLocked(healthInterface, err.Error())
	} else {
		d.setHealthLocked(healthInterface, "")
	}
	d.applyRoutesLocked(nm, tunnel, routes)
	d.applyGatewayLocked(nm)
	d.log.Debug("applied map", "version", nm.Version, "peers", len(want), "changes", len(cfg.Peers))
	d.armExpiryLocked(nm, now)
	d.dropMapLocked(nm)
	d.applyDNSLocked(nm)
}

// armExpiryLocked schedules the map to be applied again when the next peer
// expiry passes, so an expired peer leaves the engine on time; d.mu held.
func (d *Daemon) armExpiryLocked(nm *netmap.NetworkMap, now time.Time) {
	var next time.Duration
	for i := range nm.Peers {
		if e := nm.Peers[i].Expiry; !e.IsZero() && e.After(now) && (next == 0 || e.Sub(now) < next) {
			next = e.Sub(now)
		}
	}
	if d.expiryTimer != nil {
		d.expiryTimer.Stop()
		d.expiryTimer = nil
	}
	if next == 0 {
		return
	}
	d.expiryTimer = d.clk.NewTimer(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.nm == nm && d.cc != nil {
			d.applyMapLocked(nm)
		}
	})
	d.expiryTimer.Reset(next + 10*time.Millisecond)
}

// clearMapLocked removes every peer, address and route; d.mu held.
func (d *Daemon) clearMapLocked() {
	d.nm = nil
	for _, k := range mapConditions {
		d.setHealthLocked(k, "")
	}
	if d.expiryTimer != nil {
		d.expiryTimer.Stop()
		d.expiryTimer = nil
	}
	if len(d.applied) > 0 {
		cfg := &uapi.Config{ReplacePeers: true}
		if err := d.eng.Apply(cfg); err != nil {
			d.log.Error("remove peers", "err", err)
		}
		d.applied = map[pubkey.Node]appliedPeer{}
	}
	d.eng.SetPeers(nil)
	d.stopRelayLocked()
	d.clearRoutesLocked()
	d.applyGatewayLocked(nil)
	if err := d.router.ClearAddresses(); err != nil {
		d.log.Error("clear interface", "err", err)
	}
	d.dropMapLocked(nil)
	d.stopDNSLocked()
}
