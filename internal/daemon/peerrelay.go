package daemon

import (
	"net/netip"
	"slices"

	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/peerrelay"
	"github.com/warrenmesh/warren/internal/udp"
)

// Peer relays (docs/RELAY.md, "Peer relays"). The map marks the peers an
// admin approved as peer relays (netmap.Node.RelayPort); this node's
// filter spec says which of them it may use (PeerRelays) and, on a relay,
// who may use it (RelayClients). With no policy (no filter) every node may
// use every approved relay. The path layer is given the relays it may use,
// at each of the relay's reported addresses with the relay port; a node
// started with --relay-server-port serves on that port.

// peerRelayState is this node's own peer relay server.
type peerRelayState struct {
	srv  *peerrelay.Server
	port uint16
}

// relaySpec is the map's filter spec, nil when there is no policy (or it
// does not parse: then no relay is used or served, failing closed).
func relaySpec(nm *netmap.NetworkMap) (spec *filter.Spec, open bool) {
	raw := nm.PacketFilter
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	s, err := filter.ParseSpec(raw)
	if err != nil {
		return &filter.Spec{}, false
	}
	return s, false
}

// applyPeerRelaysLocked gives the path layer the peer relays it may use
// and runs (or stops) this node's own; d.mu held.
func (d *Daemon) applyPeerRelaysLocked(nm *netmap.NetworkMap) {
	d.eng.SetPeerRelays(peerRelaysFor(nm))

	if want := d.prefs.RelayServerPort; want != d.peerRelay.port {
		d.stopPeerRelayLocked()
		if want != 0 {
			d.startPeerRelayLocked(want)
		}
	}
	if d.peerRelay.srv != nil {
		d.peerRelay.srv.SetClients(relayClientsFor(nm))
	}
}

// peerRelaysFor are the peer relays the map lets this node use, at each
// of their addresses.
func peerRelaysFor(nm *netmap.NetworkMap) []magicsock.PeerRelayInfo {
	spec, open := relaySpec(nm)
	var infos []magicsock.PeerRelayInfo
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if p.RelayPort == 0 || p.DiscoKey.IsZero() || (!open && !slices.Contains(spec.PeerRelays, p.ID)) {
			continue
		}
		for _, a := range relayAddrs(p.Endpoints) {
			infos = append(infos, magicsock.PeerRelayInfo{Key: p.Key, Disco: p.DiscoKey, Addr: netip.AddrPortFrom(a, p.RelayPort)})
		}
	}
	return infos
}

// relayClientsFor are the peers this node serves as a peer relay: none
// unless an admin approved it (the map gives its own RelayPort), then the
// ones its filter spec names (every peer without a policy).
func relayClientsFor(nm *netmap.NetworkMap) []peerrelay.Client {
	if nm.Self.RelayPort == 0 {
		return nil
	}
	spec, open := relaySpec(nm)
	var clients []peerrelay.Client
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if !p.DiscoKey.IsZero() && (open || slices.Contains(spec.RelayClients, p.ID)) {
			clients = append(clients, peerrelay.Client{Key: p.Key, Disco: p.DiscoKey})
		}
	}
	return clients
}

// relayAddrs are the distinct addresses of a relay's endpoints, public
// ones first.
func relayAddrs(eps []netip.AddrPort) []netip.Addr {
	var out []netip.Addr
	for _, e := range eps {
		if a := e.Addr().Unmap(); !slices.Contains(out, a) && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		pa, pb := a.IsPrivate(), b.IsPrivate()
		switch {
		case pa == pb:
			return 0
		case pb:
			return -1
		}
		return 1
	})
	return out
}

// startPeerRelayLocked serves as a peer relay on UDP port; d.mu held.
func (d *Daemon) startPeerRelayLocked(port uint16) {
	tr := udp.New()
	if !d.cfg.Userspace {
		tr.SetMark(RouteMark) // underlay, like the engine's socket (routing.go)
	}
	srv := d.eng.NewPeerRelayServer(tr)
	if _, err := srv.Start(port); err != nil {
		d.log.Error("peer relay: cannot listen", "port", port, "err", err)
		d.peerRelay.port = port // not retried at every map; a new port (warren up) is
		return
	}
	d.log.Info("peer relay serving", "port", port)
	d.peerRelay = peerRelayState{srv: srv, port: port}
}

// stopPeerRelayLocked stops this node's peer relay; d.mu held.
func (d *Daemon) stopPeerRelayLocked() {
	if d.peerRelay.srv != nil {
		d.peerRelay.srv.Close()
	}
	d.peerRelay = peerRelayState{}
}

// PeerRelayStats is this node's peer relay's counters (nil when it serves
// none), for metrics.
func (d *Daemon) PeerRelayStats() *peerrelay.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.peerRelay.srv == nil {
		return nil
	}
	return &d.peerRelay.srv.Stats
}
