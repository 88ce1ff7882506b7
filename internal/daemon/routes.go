package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/routeprefix"
)

// Subnet routes and exit nodes, on the node (see docs/ROUTES.md).
//
// The map gives each node's Routes (approved and advertised). Which of
// its peers' routes a node uses is its own choice: subnet routes only
// with --accept-routes, default routes only of the exit node it selected
// (--exit-node PEER, or auto: the online exit node with the lowest path
// RTT, kept while it stays online and its data path alive, replaced when
// it goes away; while one is asked for and none is usable, internet
// traffic and DNS are blocked, not sent out directly: fail closed). The
// chosen routes become allowed IPs of the peer in the
// engine (so its packets from those sources pass the cryptokey check)
// and routes in table 52 (routing.go). A node whose own routes are
// approved forwards and masquerades (forward.go). With an exit node in
// use, MagicDNS forwards what it does not answer itself to the exit
// node's resolver, which answers on its tunnel addresses.

var exitRoutes = routeprefix.Exit()

// exitBlockedHelp ends the health line of an exit node that cannot be
// used.
const exitBlockedHelp = "internet traffic blocked until you pick another exit node (warren up --exit-node PEER|auto) or clear it (--exit-node=)"

// exitDeadAfter is how long the exit node may take sent packets without
// any coming back before auto mode treats its data path as dead.
const exitDeadAfter = 4 * time.Second

// exitWatchEvery is how often auto mode checks its exit node's data path.
const exitWatchEvery = 500 * time.Millisecond

// routeState is the daemon's routes side; under d.mu.
type routeState struct {
	fwdOn     bool           // forwarding for peers is on
	fwdRoutes []netip.Prefix // for these routes

	exit      pubkey.Node // the exit node in use; zero: none
	exitName  string
	exitIP    netip.Addr
	exitSince time.Time
	health    string // a problem with the exit node preference
	// blocked: an exit node is asked for but none is usable; the
	// default routes in table 52 are unreachable (fail closed).
	blocked bool

	// Data-path liveness of the exit node (auto mode): the byte counters
	// when last looked at, and since when packets went out with nothing
	// coming back.
	lastTx, lastRx uint64
	silentSince    time.Time
	dead           map[pubkey.Node]time.Time // exit nodes judged dead, until
	loopStop       chan struct{}
}

// advertisedLocked is what the node advertises; d.mu held.
func (d *Daemon) advertisedLocked() []netip.Prefix {
	out := slices.Clone(d.prefs.AdvertiseRoutes)
	if d.prefs.AdvertiseExitNode {
		out = append(out, exitRoutes...)
	}
	routeprefix.Sort(out)
	return slices.Compact(out)
}

// exitCandidate reports whether peer p may be used as an exit node now.
func (d *Daemon) exitCandidate(p *netmap.Node, self pubkey.Node, now time.Time) bool {
	if !usable(p, self, now) || !p.IsExitNode() || !p.Online {
		return false
	}
	if until, ok := d.routes.dead[p.Key]; ok && now.Before(until) {
		return false
	}
	return true
}

// selectExitLocked picks the exit node for nm per the preference; d.mu
// held. It records the choice (and a health line for a bad preference).
func (d *Daemon) selectExitLocked(nm *netmap.NetworkMap, now time.Time) *netmap.Node {
	rs := &d.routes
	rs.health = ""
	pref := d.prefs.ExitNode
	self := d.nodeKey()
	var pick *netmap.Node
	switch pref {
	case "":
	case "auto":
		var best *netmap.Node
		var bestRTT time.Duration
		for i := range nm.Peers {
			p := &nm.Peers[i]
			if !d.exitCandidate(p, self, now) {
				continue
			}
			if p.Key == rs.exit { // keep the current one while it works
				best = p
				break
			}
			rtt := d.eng.PeerPath(p.Key).RTT
			if rtt <= 0 {
				rtt = time.Hour // unknown: after measured ones, in map order
			}
			if best == nil || rtt < bestRTT {
				best, bestRTT = p, rtt
			}
		}
		pick = best
		if pick == nil {
			rs.health = "exit node auto: no exit node available; " + exitBlockedHelp
		}
	default:
		p, _, err := resolvePeer(nm, pref)
		var why string
		switch {
		case err != nil:
			why = "not in the network map (deleted?)"
		case !p.IsExitNode():
			why = "not approved as an exit node"
		case !usable(p, self, now):
			why = "expired"
		default:
			pick = p
			if !p.Online {
				rs.health = fmt.Sprintf("exit node %s is offline: internet traffic stops until it is back or you pick another exit node", pref)
			}
		}
		if pick == nil {
			rs.health = fmt.Sprintf("exit node %s unavailable: %s; %s", pref, why, exitBlockedHelp)
		}
	}
	// Fail closed: an exit node was asked for and none is usable, so
	// internet traffic is blocked rather than sent out directly.
	rs.blocked = pref != "" && pick == nil
	var key pubkey.Node
	if pick != nil {
		key = pick.Key
	}
	if key != rs.exit {
		if pick != nil {
			d.log.Info("exit node selected", "peer", pick.Name, "pref", pref)
		} else if !rs.exit.IsZero() {
			d.log.Info("exit node cleared", "was", rs.exitName, "pref", pref)
		}
		rs.exit, rs.exitSince = key, now
		rs.silentSince, rs.lastTx, rs.lastRx = time.Time{}, 0, 0
		if st, ok := d.eng.PeerStats(key.PublicKey); ok {
			rs.lastTx, rs.lastRx = st.TxBytes, st.RxBytes
		}
	}
	rs.exitName, rs.exitIP = "", netip.Addr{}
	if pick != nil {
		rs.exitName = pick.Name
		for _, a := range pick.Addresses {
			if a.Addr().Is4() || !rs.exitIP.IsValid() {
				rs.exitIP = a.Addr()
			}
		}
	}
	return pick
}

// peerRoutesLocked is what the node uses of peer p's routes: its subnets
// with --accept-routes, its default routes if it is the exit node.
func (d *Daemon) peerRoutesLocked(p *netmap.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range p.Routes {
		if routeprefix.IsExit(r) {
			if p.Key == d.routes.exit {
				out = append(out, r)
			}
		} else if d.prefs.AcceptRoutes {
			out = append(out, r)
		}
	}
	return out
}

// applyRoutesLocked installs the tunnel routes and turns forwarding on
// or off for nm; d.mu held. peers are the peers' own prefixes (routed
// through the tunnel in the main table): while internet traffic is
// blocked they go into table 52 too, in front of its unreachable default
// routes.
func (d *Daemon) applyRoutesLocked(nm *netmap.NetworkMap, tunnel, peers []netip.Prefix) {
	var src4, src6 netip.Addr
	for _, a := range nm.Self.Addresses {
		if a.Addr().Is4() && !src4.IsValid() {
			src4 = a.Addr()
		} else if a.Addr().Is6() && !src6.IsValid() {
			src6 = a.Addr()
		}
	}
	var unreachable []netip.Prefix
	if d.routes.blocked {
		unreachable = exitRoutes
		tunnel = append(slices.Clone(tunnel), peers...)
	}
	allowLAN := d.prefs.ExitNodeAllowLAN && (!d.routes.exit.IsZero() || d.routes.blocked)
	if err := d.router.SetTunnelRoutes(tunnel, unreachable, allowLAN, src4, src6); err != nil {
		d.log.Error("tunnel routes", "err", err)
		d.setHealthLocked(healthRoutes, err.Error())
	} else {
		d.setHealthLocked(healthRoutes, "")
	}
	if on := len(nm.Self.Routes) > 0; on != d.routes.fwdOn || !slices.Equal(nm.Self.Routes, d.routes.fwdRoutes) {
		if err := d.router.SetForwarding(nm.Self.Routes); err != nil {
			d.log.Error("forwarding", "err", err)
			d.setHealthLocked(healthForward, "routing for peers: "+err.Error())
		} else {
			d.setHealthLocked(healthForward, "")
			d.routes.fwdOn, d.routes.fwdRoutes = on, slices.Clone(nm.Self.Routes)
			d.log.Info("forwarding for peers", "on", on, "routes", fmt.Sprint(nm.Self.Routes))
		}
	}
	d.setHealthLocked(healthExit, d.routes.health)
	if d.prefs.ExitNode == "auto" {
		d.startExitWatchLocked()
	}
}

// clearRoutesLocked removes the tunnel routes and stops forwarding; d.mu
// held.
func (d *Daemon) clearRoutesLocked() {
	if d.router == nil {
		return
	}
	if err := d.router.ClearTunnelRoutes(); err != nil {
		d.log.Warn("clear tunnel routes", "err", err)
	}
	if err := d.router.SetForwarding(nil); err != nil {
		d.log.Warn("stop forwarding", "err", err)
	} else {
		d.routes.fwdOn, d.routes.fwdRoutes = false, nil
	}
	d.routes.exit, d.routes.exitName, d.routes.exitIP = pubkey.Node{}, "", netip.Addr{}
	d.routes.blocked = false
	d.stopExitWatchLocked()
}

// initRoutes prepares the routes side at start, removing what a crashed
// daemon left behind; it runs before the first map is applied.
func (d *Daemon) initRoutes() { d.router.Cleanup(d.log) }

// startExitWatchLocked runs the auto exit node's liveness check; d.mu
// held.
func (d *Daemon) startExitWatchLocked() {
	if d.routes.loopStop != nil {
		return
	}
	stop := make(chan struct{})
	d.routes.loopStop = stop
	go func() {
		t := clock.NewChanTimer(d.clk)
		t.Reset(exitWatchEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			d.mu.Lock()
			d.checkExitLocked(d.clk.Now())
			d.mu.Unlock()
			t.Reset(exitWatchEvery) // after the check: a test on a fake clock sees it done
		}
	}()
}

func (d *Daemon) stopExitWatchLocked() {
	if d.routes.loopStop != nil {
		close(d.routes.loopStop)
		d.routes.loopStop = nil
	}
}

// checkExitLocked fails over from an exit node whose data path is dead:
// packets went to it for exitDeadAfter and nothing came back (WireGuard
// would only notice after its 15 s rekey timeout). It also retries the
// selection when there is no exit node (one may have come back). d.mu
// held.
func (d *Daemon) checkExitLocked(now time.Time) {
	rs := &d.routes
	if d.nm == nil || d.cc == nil || d.prefs.ExitNode != "auto" {
		return
	}
	if rs.exit.IsZero() {
		for i := range d.nm.Peers {
			if d.exitCandidate(&d.nm.Peers[i], d.nodeKey(), now) {
				d.applyMapLocked(d.nm)
				return
			}
		}
		return
	}
	st, ok := d.eng.PeerStats(rs.exit.PublicKey)
	if !ok {
		return
	}
	switch {
	case st.RxBytes != rs.lastRx:
		rs.silentSince = time.Time{}
	case st.TxBytes != rs.lastTx && rs.silentSince.IsZero():
		rs.silentSince = now
	}
	rs.lastTx, rs.lastRx = st.TxBytes, st.RxBytes
	if !rs.silentSince.IsZero() && now.Sub(rs.silentSince) > exitDeadAfter {
		if rs.dead == nil {
			rs.dead = map[pubkey.Node]time.Time{}
		}
		rs.dead[rs.exit] = now.Add(30 * time.Second)
		d.log.Warn("exit node's data path is dead: failing over", "peer", rs.exitName, "silent", now.Sub(rs.silentSince).Round(time.Millisecond))
		d.applyMapLocked(d.nm)
	}
}

// SetRoutePrefs changes the route preferences (localapi.RoutesBackend).
func (d *Daemon) SetRoutePrefs(ctx context.Context, p localapi.RoutePrefs) (*localapi.RouteStatus, error) {
	d.mu.Lock()
	st, report, err := d.setRoutePrefsLocked(p)
	d.mu.Unlock()
	if report != nil {
		report() // a write on the map stream: without d.mu
	}
	return st, err
}

// setRoutePrefsLocked is SetRoutePrefs under d.mu; report, if not nil,
// tells the server the new advertised routes.
func (d *Daemon) setRoutePrefsLocked(p localapi.RoutePrefs) (_ *localapi.RouteStatus, report func(), _ error) {
	next := d.prefs
	if p.AdvertiseRoutes != nil {
		rs, err := routeprefix.Normalize(*p.AdvertiseRoutes)
		if err != nil {
			return nil, nil, fmt.Errorf("--advertise-routes: %v", err)
		}
		if slices.ContainsFunc(rs, routeprefix.IsExit) {
			return nil, nil, errors.New("--advertise-routes: use --advertise-exit-node to offer 0.0.0.0/0 and ::/0")
		}
		next.AdvertiseRoutes = rs
	}
	if p.AdvertiseExitNode != nil {
		next.AdvertiseExitNode = *p.AdvertiseExitNode
	}
	if p.AcceptRoutes != nil {
		next.AcceptRoutes = *p.AcceptRoutes
	}
	if p.ExitNodeAllowLAN != nil {
		next.ExitNodeAllowLAN = *p.ExitNodeAllowLAN
	}
	if p.RelayServerPort != nil {
		next.RelayServerPort = *p.RelayServerPort
	}
	if p.ExitNode != nil {
		e := strings.TrimSpace(*p.ExitNode)
		if e != "" && e != "auto" && d.nm != nil {
			peer, _, err := resolvePeer(d.nm, e)
			switch {
			case err != nil:
				return nil, nil, fmt.Errorf("--exit-node: no peer %q in the network map (see `warren status`)", e)
			case !peer.IsExitNode():
				return nil, nil, fmt.Errorf("--exit-node: %s is not an exit node (it must run with --advertise-exit-node and an admin must approve its routes)", peer.Name)
			}
		}
		next.ExitNode = e
	}
	if next.ExitNode != "" && next.AdvertiseExitNode {
		return nil, nil, errors.New("a node cannot use an exit node and be one: pass --exit-node= or --advertise-exit-node=false")
	}
	oldAdv, oldRelay := d.advertisedLocked(), d.prefs.RelayServerPort
	d.prefs = next
	if err := savePrefs(d.cfg.StateDir, d.prefs); err != nil {
		return nil, nil, err
	}
	if adv, cc := d.advertisedLocked(), d.cc; !slices.Equal(adv, oldAdv) && cc != nil {
		report = func() {
			if err := cc.SetRoutes(adv); err != nil {
				d.log.Warn("report advertised routes", "err", err)
			}
		}
	}
	if port, cc := d.prefs.RelayServerPort, d.cc; port != oldRelay && cc != nil {
		adv := report
		report = func() {
			if adv != nil {
				adv()
			}
			if err := cc.SetRelayPort(port); err != nil {
				d.log.Warn("report relay server port", "err", err)
			}
		}
	}
	if d.prefs.ExitNode != "auto" {
		d.stopExitWatchLocked()
	}
	if d.nm != nil && d.cc != nil {
		d.applyMapLocked(d.nm)
	}
	return d.routeStatusLocked(), report, nil
}

// RouteStatus reports the route preferences and state
// (localapi.RoutesBackend).
func (d *Daemon) RouteStatus() *localapi.RouteStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.routeStatusLocked()
}

func (d *Daemon) routeStatusLocked() *localapi.RouteStatus {
	st := &localapi.RouteStatus{
		AdvertiseRoutes: slices.Clone(d.prefs.AdvertiseRoutes), AdvertiseExitNode: d.prefs.AdvertiseExitNode,
		AcceptRoutes: d.prefs.AcceptRoutes, ExitNode: d.prefs.ExitNode, ExitNodeAllowLAN: d.prefs.ExitNodeAllowLAN,
		Peers: []localapi.PeerRoutes{},
	}
	if st.AdvertiseRoutes == nil {
		st.AdvertiseRoutes = []netip.Prefix{}
	}
	nm := d.nm
	if nm == nil {
		st.Routes = []netip.Prefix{}
		return st
	}
	st.Routes = slices.Clone(nm.Self.Routes)
	if st.Routes == nil {
		st.Routes = []netip.Prefix{}
	}
	if !d.routes.exit.IsZero() {
		st.CurrentExitNode, st.CurrentExitNodeIP, st.ExitSince = d.routes.exitName, d.routes.exitIP, d.routes.exitSince
	}
	if d.routes.blocked {
		st.ExitBlocked = d.routes.health
	}
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if len(p.Routes) == 0 || p.Key == d.nodeKey() {
			continue
		}
		pr := localapi.PeerRoutes{Name: p.Name, Online: p.Online, Routes: slices.Clone(p.Routes), ExitNode: p.IsExitNode(),
			InUse: p.Key == d.routes.exit}
		for _, a := range p.Addresses {
			if a.Addr().Is4() || !pr.Addr.IsValid() {
				pr.Addr = a.Addr()
			}
		}
		for _, r := range d.peerRoutesLocked(p) {
			pr.Accepted = append(pr.Accepted, r)
		}
		st.Peers = append(st.Peers, pr)
	}
	return st
}
