package uapi

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
)

// testDevice is an in-memory Device: it records every applied Config and
// keeps a small model of the configuration that State reports, with
// statistics that tests can set per peer.
type testDevice struct {
	mu       sync.Mutex
	applied  []*Config
	applyErr error // returned by Apply instead of applying when non-nil
	state    State
	stats    map[noise.PublicKey]peerStats
}

type peerStats struct {
	handshake time.Time
	rx, tx    uint64
}

func newTestDevice() *testDevice {
	return &testDevice{stats: make(map[noise.PublicKey]peerStats)}
}

func (d *testDevice) Apply(c *Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applied = append(d.applied, c)
	if d.applyErr != nil {
		return d.applyErr
	}
	s := &d.state
	if c.PrivateKey != nil {
		s.PrivateKey = *c.PrivateKey
	}
	if c.ListenPort != nil {
		s.ListenPort = *c.ListenPort
	}
	if c.FwMark != nil {
		s.FwMark = *c.FwMark
	}
	if c.ReplacePeers {
		s.Peers = nil
	}
	for _, pc := range c.Peers {
		i := slices.IndexFunc(s.Peers, func(p PeerState) bool { return p.PublicKey == pc.PublicKey })
		if pc.Remove {
			if i >= 0 {
				s.Peers = slices.Delete(s.Peers, i, i+1)
			}
			continue
		}
		if i < 0 {
			if pc.UpdateOnly {
				continue
			}
			s.Peers = append(s.Peers, PeerState{PublicKey: pc.PublicKey, ProtocolVersion: 1})
			i = len(s.Peers) - 1
		}
		p := &s.Peers[i]
		if pc.PresharedKey != nil {
			p.PresharedKey = *pc.PresharedKey
		}
		if pc.Endpoint != "" {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepalive != nil {
			p.PersistentKeepalive = *pc.PersistentKeepalive
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = slices.DeleteFunc(p.AllowedIPs, func(a netip.Prefix) bool {
			return slices.Contains(pc.RemoveAllowedIPs, a)
		})
		have := make(map[netip.Prefix]bool, len(p.AllowedIPs))
		for _, a := range p.AllowedIPs {
			have[a] = true
		}
		for _, a := range pc.AllowedIPs {
			if !have[a] {
				have[a] = true
				p.AllowedIPs = append(p.AllowedIPs, a)
			}
		}
	}
	return nil
}

func (d *testDevice) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.state
	s.Peers = slices.Clone(s.Peers)
	for i := range s.Peers {
		p := &s.Peers[i]
		p.AllowedIPs = slices.Clone(p.AllowedIPs)
		if st, ok := d.stats[p.PublicKey]; ok {
			p.LastHandshake, p.RxBytes, p.TxBytes = st.handshake, st.rx, st.tx
		}
	}
	return s
}

func (d *testDevice) setStats(k noise.PublicKey, st peerStats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats[k] = st
}

func (d *testDevice) setApplyErr(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applyErr = err
}

// takeApplied returns the configs applied since the last call.
func (d *testDevice) takeApplied() []*Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.applied
	d.applied = nil
	return a
}
