package daemon

// The node's status as the local API reports it: self, peers and paths.

import (
	"slices"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// Status reports the node and its peers.
func (d *Daemon) Status() *localapi.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusLocked()
}

func (d *Daemon) statusLocked() *localapi.Status {
	st := &localapi.Status{
		BackendState: d.state,
		ServerURL:    d.prefs.ServerURL,
		ServerKey:    d.prefs.ServerKey,
		TUN:          d.tunName(),
		ListenPort:   d.eng.Port(),
		Peers:        []localapi.PeerStatus{},
		Health:       d.health.list(),
		AcceptDNS:    d.prefs.AcceptDNS,
		AuthURL:      d.login.authURL,
	}
	if d.cc != nil {
		st.Connected = d.cc.Connected()
	}
	nm := d.nm
	if nm == nil {
		st.Self = &localapi.PeerStatus{PublicKey: d.key.PublicKey().String(), Endpoints: d.endpoints(), Online: false}
		return st
	}
	st.Domain = nm.Domain
	self := d.nodeStatus(nm, &nm.Self)
	self.Online = st.Connected
	self.Endpoints = d.endpoints()
	st.Self = &self
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if p.Key == d.nodeKey() {
			continue
		}
		ps := d.nodeStatus(nm, p)
		if s, ok := d.eng.PeerStats(p.Key.PublicKey); ok {
			ps.RxBytes, ps.TxBytes = s.RxBytes, s.TxBytes
			ps.LastHandshake = s.LastHandshake
			ps.CurrentAddr = s.Endpoint
		} else if p.Via != 0 {
			// A WireGuard-only member of another gateway: its handshake
			// and traffic as that gateway reported them (wireguard.go).
			ps.LastHandshake = p.LastSeen
			if !p.Traffic.IsZero() {
				ps.RxBytes, ps.TxBytes = p.Traffic.RxBytes, p.Traffic.TxBytes
				ps.TrafficReportedAt = p.Traffic.At
			}
		}
		if p.Via == nm.Self.ID && p.Via != 0 {
			ps.Via = nm.Self.Name
		} else if gw, ok := nm.Peer(p.Via); ok && p.Via != 0 {
			ps.Via = gw.Name
		}
		d.fillPath(&ps, p.Key)
		st.Peers = append(st.Peers, ps)
	}
	return st
}

func (d *Daemon) nodeStatus(nm *netmap.NetworkMap, n *netmap.Node) localapi.PeerStatus {
	ps := localapi.PeerStatus{
		ID: n.ID, Name: n.Name, User: n.User, PublicKey: n.Key.String(),
		AllowedIPs: slices.Clone(n.AllowedIPs), Endpoints: slices.Clone(n.Endpoints),
		Online: n.Online, LastSeen: n.LastSeen, Expiry: n.Expiry,
	}
	if nm.Domain != "" {
		ps.DNSName = n.Name + "." + nm.Domain
	}
	for _, a := range n.Addresses {
		ps.Addresses = append(ps.Addresses, a.Addr())
	}
	return ps
}

// localEndpoints lists the addresses peers may reach this node at: every

// fillPath describes the path layer's current path to peer k.
func (d *Daemon) fillPath(ps *localapi.PeerStatus, k pubkey.Node) {
	path := d.eng.PeerPath(k)
	ps.Path, ps.PathReason = string(path.Kind), string(path.Reason)
	if path.Addr.IsValid() {
		ps.PathAddr = path.Addr.String()
	}
	ps.PathRTT, ps.PathJitter = path.RTT, path.Jitter
	switch path.Kind {
	case magicsock.PathRelay:
		ps.PathRelay = d.relay.region.Code
	case magicsock.PathPeerRelay:
		ps.PathRelay = path.Via.String() // the relay node, by name when the map has it
		if d.nm != nil {
			for i := range d.nm.Peers {
				if d.nm.Peers[i].Key == path.Via {
					ps.PathRelay = d.nm.Peers[i].Name
				}
			}
		}
	}
}

// pathString is a one-word-or-two description of the path to peer k.
func (d *Daemon) pathString(k pubkey.Node) string {
	d.mu.Lock()
	var ps localapi.PeerStatus
	d.fillPath(&ps, k)
	d.mu.Unlock()
	switch ps.Path {
	case "direct":
		return "direct " + ps.PathAddr
	case "relay":
		return "relay " + ps.PathRelay
	case "peer-relay":
		return "peer relay " + ps.PathRelay
	case "guess":
		return ps.PathAddr
	}
	return ""
}
