package daemon

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
)

// relayState is the node's session with its home relay (the first region
// of the map's relay list) and what it was started for.
type relayState struct {
	client relaySession
	region netmap.RelayRegion
	stun   []netip.AddrPort
	// closing counts sessions being closed (stopRelayLocked), which Run
	// waits for before it returns.
	closing *sync.WaitGroup
}

// relaySession is a session with a relay: *relay.Client (tests replace
// it through Daemon.newRelay).
type relaySession interface {
	magicsock.Relay
	Close() error
}

// dialRelay starts a session with the home relay.
func (d *Daemon) dialRelay(home netmap.RelayRegion, o relay.ClientOptions) relaySession {
	if d.newRelay != nil {
		return d.newRelay(home, o)
	}
	return relay.NewClient(home.URL, home.Key, d.key, o)
}

// applyPathsLocked gives the path layer the peers' probe keys and
// addresses, and keeps a session to the home relay; d.mu held.
func (d *Daemon) applyPathsLocked(nm *netmap.NetworkMap, want map[pubkey.Node]*netmap.Node) {
	infos := make([]magicsock.PeerInfo, 0, len(want))
	for _, p := range want {
		infos = append(infos, magicsock.PeerInfo{Key: p.Key, DiscoKey: p.DiscoKey, Endpoints: p.Endpoints, Plain: p.Via != 0})
	}
	d.eng.SetPeers(infos)
	d.applyPeerRelaysLocked(nm)

	if len(nm.Relays) == 0 {
		d.stopRelayLocked()
		return
	}
	home := nm.Relays[0]
	if d.relay.client != nil && d.relay.region == home {
		return
	}
	d.stopRelayLocked()
	c := d.dialRelay(home, relay.ClientOptions{
		Receive: d.eng.ReceiveRelayed,
		OnState: func(up bool) { d.log.Info("relay session", "region", home.Code, "up", up) },
		Logger:  d.log,
		Clock:   d.clk,
		// The relay is underlay: it must not follow an exit node's route.
		DialOptions: relay.DialOptions{Control: d.router.SocketControl},
	})
	d.relay = relayState{client: c, region: home, closing: d.relay.closing}
	d.eng.SetRelay(c)
	if home.STUN != "" {
		go d.startSTUN(home)
	}
}

// startSTUN resolves the home relay's STUN responder (it may be a name)
// and has the path layer ask it for our public address.
func (d *Daemon) startSTUN(home netmap.RelayRegion) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host, port, err := net.SplitHostPort(home.STUN)
	if err != nil {
		d.log.Warn("relay STUN address", "stun", home.STUN, "err", err)
		return
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		d.log.Warn("resolve relay STUN address", "stun", home.STUN, "err", err)
		return
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return
	}
	var servers []netip.AddrPort
	for _, ip := range ips {
		servers = append(servers, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.relay.region != home {
		return // replaced meanwhile
	}
	d.relay.stun = servers
	d.eng.SetSTUN(servers, func([]netip.AddrPort) { go d.reportEndpoints() })
}

// stopRelayLocked ends the relay session; d.mu held. The engine stops
// using it at once; the session is closed in a goroutine of its own,
// since closing waits for its connection's teardown, which is network
// I/O (closing a TLS connection writes, for up to its write deadline)
// that d.mu must not be held across. Run waits for it before returning.
func (d *Daemon) stopRelayLocked() {
	closing := d.relay.closing
	if closing == nil {
		closing = &sync.WaitGroup{}
	}
	if c := d.relay.client; c != nil {
		d.eng.SetRelay(nil)
		d.eng.SetSTUN(nil, nil)
		closing.Go(func() { c.Close() })
	}
	d.relay = relayState{closing: closing}
}

// waitRelaysClosed waits for the relay sessions being closed; d.mu not
// held.
func (d *Daemon) waitRelaysClosed() {
	d.mu.Lock()
	closing := d.relay.closing
	d.mu.Unlock()
	if closing != nil {
		closing.Wait()
	}
}

// endpoints is what this node announces: its interface addresses and the
// public addresses STUN found, with the engine's port, and the gateway's
// port mapping (portmap.go).
func (d *Daemon) endpoints() []netip.AddrPort {
	eps := d.localEndpoints()
	for _, a := range d.eng.Discovered() {
		if !slices.Contains(eps, a) {
			eps = append(eps, a)
		}
	}
	if a, ok := d.mappedEndpoint(); ok && !slices.Contains(eps, a) {
		eps = append(eps, a)
	}
	return eps
}

// reportEndpoints tells the server and the path layer our endpoints now.
func (d *Daemon) reportEndpoints() {
	eps := d.endpoints()
	d.eng.SetLocalEndpoints(eps)
	d.mu.Lock()
	cc := d.cc
	d.mu.Unlock()
	if cc != nil {
		if err := cc.SetEndpoints(eps); err != nil {
			d.log.Debug("report endpoints", "err", err)
		}
	}
}
