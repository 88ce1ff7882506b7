package device

import (
	"net/netip"
	"sort"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/uapi"
)

// Apply applies a configuration request (uapi.Device). Changes before an
// error stay applied, as with wireguard-go.
func (d *Device) Apply(c *uapi.Config) error {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	if d.closed.Load() {
		return uapi.Errorf(uapi.EIO, "device closed")
	}
	if c.PrivateKey != nil {
		d.setPrivateKey(*c.PrivateKey)
	}
	if c.ListenPort != nil || c.FwMark != nil {
		d.net.Lock()
		if c.ListenPort != nil {
			d.net.port = *c.ListenPort
		}
		if c.FwMark != nil {
			d.net.fwmark = *c.FwMark
		}
		d.net.Unlock()
		if c.ListenPort != nil {
			if err := d.rebindLocked(); err != nil {
				return uapi.Errorf(uapi.EADDRINUSE, "cannot bind port %d: %v", *c.ListenPort, err)
			}
		} else if d.IsUp() {
			d.net.RLock()
			err := d.net.transport.SetMark(d.net.fwmark)
			d.net.RUnlock()
			if err != nil {
				return uapi.Errorf(uapi.EINVAL, "cannot set fwmark: %v", err)
			}
		}
	}
	if c.ReplacePeers {
		d.removeAllPeers()
	}
	for i := range c.Peers {
		if err := d.applyPeer(&c.Peers[i]); err != nil {
			return err
		}
	}
	return nil
}

func (d *Device) applyPeer(pc *uapi.PeerConfig) error {
	p := d.LookupPeer(pc.PublicKey)
	if pc.Remove {
		if p != nil {
			d.removePeer(p)
		}
		return nil
	}
	created := false
	if p == nil {
		if pc.UpdateOnly {
			return nil
		}
		if s := d.staticIdentity(); s != nil && s.Public.Equal(pc.PublicKey) {
			// A peer with our own key could never handshake; ignore it
			// as wireguard-go does.
			d.log.Warn("ignoring peer with our own public key")
			return nil
		}
		var err error
		if p, err = d.newPeer(pc.PublicKey); err != nil {
			return uapi.Errorf(uapi.ENOMEM, "%v", err)
		}
		created = true
	}
	if pc.PresharedKey != nil {
		p.hs.Lock()
		p.hs.h.PresharedKey = *pc.PresharedKey
		p.hs.Unlock()
	}
	if pc.Endpoint != "" {
		ep, err := d.net.transport.ParseEndpoint(pc.Endpoint)
		if err != nil {
			return uapi.Errorf(uapi.EINVAL, "endpoint %q: %v", pc.Endpoint, err)
		}
		p.setEndpoint(ep)
	}
	d.routes.Lock()
	if pc.ReplaceAllowedIPs {
		d.routes.t.RemoveValue(p)
	}
	for _, pfx := range pc.AllowedIPs {
		d.routes.t.Insert(pfx, p)
	}
	for _, pfx := range pc.RemoveAllowedIPs {
		d.routes.t.Remove(pfx, p)
	}
	d.routes.Unlock()
	startKeepalive := false
	if pc.PersistentKeepalive != nil {
		old := p.persistentKeepalive.Swap(uint32(*pc.PersistentKeepalive))
		startKeepalive = old == 0 && *pc.PersistentKeepalive > 0
	}
	if d.IsUp() {
		if created {
			p.start()
		}
		if startKeepalive {
			p.sendKeepalive()
		}
	}
	return nil
}

// setPrivateKey changes the static identity; d.ipcMu is held. Sessions made
// with the old key are expired and every peer's static-static secret is
// recomputed.
func (d *Device) setPrivateKey(k noise.PrivateKey) {
	d.static.Lock()
	old := d.static.s
	if old != nil && noise.EqualKeys(old.Private[:], k[:]) {
		d.static.Unlock()
		return
	}
	var s *noise.Static
	if !k.IsZero() {
		s = noise.NewStatic(k)
	}
	d.static.s = s
	d.static.Unlock()
	// The old identity is not wiped here: a handshake worker may still be
	// using it. Close wipes the last one once every worker has stopped.
	_ = old
	if s != nil {
		d.cookies.Init(s.Public)
		if p := d.LookupPeer(s.Public); p != nil {
			d.removePeer(p)
		}
	}
	for _, p := range d.peerList() {
		p.hs.Lock()
		p.setStaticLocked(s)
		d.index.delete(p.hs.h.LocalIndex)
		p.hs.h.Clear()
		p.hs.lastSent = d.clock.Now().Add(-RekeyTimeout - time.Second)
		p.hs.Unlock()
		p.keypairs.RLock()
		if cur := p.keypairs.current; cur != nil {
			cur.sendNonce.Store(RejectAfterMessages)
		}
		if next := p.keypairs.next; next != nil {
			next.sendNonce.Store(RejectAfterMessages)
		}
		p.keypairs.RUnlock()
	}
}

// State reports the configuration and statistics (uapi.Device).
func (d *Device) State() uapi.State {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	var st uapi.State
	if s := d.staticIdentity(); s != nil {
		st.PrivateKey = s.Private
	}
	d.net.RLock()
	st.ListenPort = d.net.boundPort
	if st.ListenPort == 0 {
		st.ListenPort = d.net.port
	}
	st.FwMark = d.net.fwmark
	d.net.RUnlock()
	peers := d.peerList()
	sort.Slice(peers, func(i, j int) bool {
		return string(peers[i].public[:]) < string(peers[j].public[:])
	})
	for _, p := range peers {
		ps := uapi.PeerState{
			PublicKey:           p.public,
			RxBytes:             p.rxBytes.Load(),
			TxBytes:             p.txBytes.Load(),
			PersistentKeepalive: uint16(p.persistentKeepalive.Load()),
			ProtocolVersion:     1,
		}
		p.hs.Lock()
		ps.PresharedKey = p.hs.h.PresharedKey
		p.hs.Unlock()
		if ep := p.Endpoint(); ep != nil {
			ps.Endpoint = ep.String()
		}
		if ns := p.lastHandshakeNano.Load(); ns != 0 {
			ps.LastHandshake = time.Unix(0, ns)
		}
		d.routes.RLock()
		ps.AllowedIPs = d.routes.t.Prefixes(p)
		d.routes.RUnlock()
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// PeerStats is a snapshot of one peer for tests and status displays.
type PeerStats struct {
	RxBytes, TxBytes     uint64
	RxPackets, TxPackets uint64 // transport messages, keepalives included
	LastHandshake        time.Time
	Endpoint             string
	AllowedIPs           []netip.Prefix
}

// PeerStats returns statistics for the peer with key pk.
func (d *Device) PeerStats(pk noise.PublicKey) (PeerStats, bool) {
	p := d.LookupPeer(pk)
	if p == nil {
		return PeerStats{}, false
	}
	var s PeerStats
	s.RxBytes, s.TxBytes = p.rxBytes.Load(), p.txBytes.Load()
	s.RxPackets, s.TxPackets = p.rxPackets.Load(), p.txPackets.Load()
	if ns := p.lastHandshakeNano.Load(); ns != 0 {
		s.LastHandshake = time.Unix(0, ns)
	}
	if ep := p.Endpoint(); ep != nil {
		s.Endpoint = ep.String()
	}
	d.routes.RLock()
	s.AllowedIPs = d.routes.t.Prefixes(p)
	d.routes.RUnlock()
	return s, true
}
