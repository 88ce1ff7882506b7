package magicsock

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/peerrelay"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// Peer relays (docs/RELAY.md, "Peer relays"): while a peer in use has no
// trusted direct path, the layer asks a peer relay the coordination
// server lets it use for a session with that peer (an allocation, sealed
// with our disco key; see package peerrelay), and repeats it while the
// path is needed, which keeps our side bound at the relay. Once the relay
// says the peer's side is bound too, data goes to the relay in the
// session, UDP end to end, instead of over the TCP relay; a direct path,
// once proven, still wins. A relay that stops answering is given up after
// viaTimeout, one that refuses is not asked for that peer for refusedFor.

// Peer relay timing.
const (
	viaPending = time.Second     // allocation repeated while the peer's side is not bound
	viaRefresh = 2 * time.Second // and once it is
	viaTimeout = 5 * time.Second // no answer for this long: the session is given up
	refusedFor = 30 * time.Second
	// viaCalled is how long after a call-me-maybe from a peer we take part
	// in a peer relay session with it though we send it nothing: its data
	// needs our side bound.
	viaCalled = 2 * callEvery
)

// PeerRelayInfo is a peer relay this node may use, from the netmap.
type PeerRelayInfo struct {
	Key   pubkey.Node
	Disco pubkey.Disco
	Addr  netip.AddrPort // its relay port
}

type relayTarget struct {
	info   PeerRelayInfo
	shared *[32]byte
	udp    conn.Endpoint
}

// viaState is a peer's session at a peer relay (relay nil: none).
type viaState struct {
	relay   *relayTarget
	session uint64
	bound   bool // the peer's side is bound: data gets through
	lastOK  time.Time
	lastReq time.Time
	since   time.Time // first allocation at this relay
	tx      peerrelay.TxID
}

// viaSession is what a received data message's session maps to.
type viaSession struct {
	p     *peerEP
	relay netip.AddrPort
}

// SetPeerRelays sets the peer relays this node may use (nil: none).
// Sessions at relays no longer listed end; a relay listed again keeps its
// sessions (the daemon sets the list at every map it applies).
func (c *Conn) SetPeerRelays(relays []PeerRelayInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var targets []*relayTarget
	for _, r := range relays {
		if r.Disco.IsZero() || r.Disco.IsLowOrder() || !r.Addr.IsValid() || r.Key == c.opts.NodeKey {
			continue
		}
		if i := slices.IndexFunc(c.peerRelays, func(t *relayTarget) bool { return t.info == r }); i >= 0 {
			targets = append(targets, c.peerRelays[i])
			continue
		}
		t := &relayTarget{info: r, shared: sharedKey(c.opts.DiscoKey, r.Disco)}
		if ep, err := c.udp.ParseEndpoint(r.Addr.String()); err == nil {
			t.udp = ep
		}
		targets = append(targets, t)
	}
	c.peerRelays = targets
	for id, vs := range c.viaSessions {
		vs.p.mu.Lock()
		if vs.p.via.relay != nil && !slices.Contains(targets, vs.p.via.relay) {
			vs.p.via = viaState{}
			delete(c.viaSessions, id)
		}
		vs.p.mu.Unlock()
	}
}

// viaLocked returns the peer's usable peer relay session, or nil.
func (p *peerEP) viaLocked(now time.Time) *viaState {
	v := &p.via
	if v.relay == nil || !v.bound || v.relay.udp == nil || now.Sub(v.lastOK) >= viaTimeout {
		return nil
	}
	return v
}

// allocDue asks a peer relay for a session with p when one is needed and
// due: p has no trusted path and is in use (or called us lately), and
// UDP gets out.
func (c *Conn) allocDue(p *peerEP, now time.Time, relays []*relayTarget, udpBlocked bool) {
	p.mu.Lock()
	if p.via.relay != nil && !slices.Contains(relays, p.via.relay) {
		c.dropViaLocked(p) // no longer a relay we may use
	}
	if len(relays) == 0 || udpBlocked {
		p.mu.Unlock()
		return
	}
	_, trusted, _ := p.pathLocked(now)
	wanted := now.Sub(p.lastActive) < activeFor || (!p.lastCallRecv.IsZero() && now.Sub(p.lastCallRecv) < viaCalled)
	v := &p.via
	if v.relay != nil && !v.lastReq.IsZero() && now.Sub(v.lastReq) < viaPending && now.Sub(v.lastOK) >= viaTimeout &&
		now.Sub(v.since) >= viaTimeout {
		// Still asking, and no answer for viaTimeout: the relay is gone
		// (or unreachable from here at this address); try another.
		p.refused[v.relay.info.Addr] = now.Add(refusedFor)
		c.dropViaLocked(p)
	}
	every := viaRefresh
	if !v.bound {
		every = viaPending
	}
	if trusted || !wanted || (!v.lastReq.IsZero() && now.Sub(v.lastReq) < every) {
		p.mu.Unlock()
		return
	}
	target := v.relay
	if target == nil {
		for _, t := range relays {
			if until, ok := p.refused[t.info.Addr]; (!ok || now.After(until)) && t.udp != nil && t.info.Key != p.key {
				target = t
				break
			}
		}
	}
	if target == nil {
		p.mu.Unlock()
		return
	}
	if v.relay != target {
		p.via = viaState{relay: target, since: now}
	}
	v.lastReq = now
	v.tx = peerrelay.NewTxID()
	req := peerrelay.Allocate{Tx: v.tx, Peer: p.key, Clock: c.allocClock(now)}
	p.mu.Unlock()
	c.mu.RLock()
	req.From = c.opts.NodeKey
	c.mu.RUnlock()
	pkt := peerrelay.Seal(c.discoPub, target.shared, peerrelay.Message{Allocate: &req})
	if c.udp.Send([][]byte{pkt}, target.udp) == nil {
		c.Stats.PeerRelayCtlSent.Add(1)
	}
}

// dropViaLocked ends p's peer relay session (p.mu held). Its entry in
// c.viaSessions is removed by the prober's next pruneViaSessions (c.mu
// cannot be taken under p.mu).
func (c *Conn) dropViaLocked(p *peerEP) {
	if p.via.session != 0 {
		c.viaDrop.Store(true)
	}
	p.via = viaState{}
}

// allocClock is the clock of an allocation: increasing for every one we
// send (the relay refuses one not newer than the last).
func (c *Conn) allocClock(now time.Time) uint64 {
	want := c.pingClock(now)
	for {
		last := c.lastAlloc.Load()
		next := max(want, last+1)
		if c.lastAlloc.CompareAndSwap(last, next) {
			return next
		}
	}
}

// handleRelayControl takes a peer relay's answer off the socket.
func (c *Conn) handleRelayControl(b []byte, src netip.AddrPort, now time.Time) {
	c.mu.RLock()
	var target *relayTarget
	for _, t := range c.peerRelays {
		if t.info.Disco == peerrelay.ControlSender(b) && t.info.Addr == src {
			target = t
		}
	}
	c.mu.RUnlock()
	if target == nil {
		c.Stats.PeerRelayBad.Add(1)
		return
	}
	m, err := peerrelay.Open(b, target.shared)
	if err != nil || m.Allocated == nil {
		c.Stats.PeerRelayBad.Add(1)
		return
	}
	a := m.Allocated
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		p.mu.Lock()
		if p.via.relay != target || p.via.tx != a.Tx {
			p.mu.Unlock()
			continue
		}
		if a.Status != peerrelay.StatusOK {
			p.refused[target.info.Addr] = now.Add(refusedFor)
			if p.via.session != 0 {
				delete(c.viaSessions, p.via.session)
			}
			p.via = viaState{}
			p.mu.Unlock()
			c.Stats.PeerRelayRefused.Add(1)
			return
		}
		if p.via.session != 0 && p.via.session != a.Session {
			delete(c.viaSessions, p.via.session)
		}
		p.via.session, p.via.bound, p.via.lastOK = a.Session, a.PeerBound, now
		p.via.tx = peerrelay.TxID{}
		c.viaSessions[a.Session] = viaSession{p: p, relay: target.info.Addr}
		p.mu.Unlock()
		return
	}
	c.Stats.PeerRelayBad.Add(1) // no allocation of ours waits for it
}

// pruneViaSessions forgets sessions of peers that gave theirs up.
func (c *Conn) pruneViaSessions() {
	if !c.viaDrop.Swap(false) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, vs := range c.viaSessions {
		vs.p.mu.Lock()
		stale := vs.p.via.session != id || c.peers[vs.p.key] != vs.p
		vs.p.mu.Unlock()
		if stale {
			delete(c.viaSessions, id)
		}
	}
}

// viaBatch is one batch for a peer relay: the packets with their session
// headers, in pooled buffers.
type viaBatch struct {
	out [][]byte
	bps []*[]byte
}

var viaBatches = sync.Pool{New: func() any { return new(viaBatch) }}

// sendVia sends a batch to p through its peer relay session.
func (c *Conn) sendVia(bufs [][]byte, v viaState) error {
	vb := viaBatches.Get().(*viaBatch)
	for _, b := range bufs {
		bp := relayBufs.Get().(*[]byte)
		*bp = peerrelay.AppendData((*bp)[:0], v.session, b)
		vb.out, vb.bps = append(vb.out, *bp), append(vb.bps, bp)
	}
	err := c.udp.Send(vb.out, v.relay.udp)
	for _, bp := range vb.bps {
		relayBufs.Put(bp)
	}
	clear(vb.out)
	clear(vb.bps)
	vb.out, vb.bps = vb.out[:0], vb.bps[:0]
	viaBatches.Put(vb)
	if err == nil {
		c.Stats.PeerRelaySent.Add(uint64(len(bufs)))
	}
	return err
}

// viaPeerLocked returns the peer a data message from a peer relay is for,
// nil when no session of ours matches (c.mu held, read or write).
func (c *Conn) viaPeerLocked(b []byte, src netip.AddrPort) *peerEP {
	vs, ok := c.viaSessions[peerrelay.DataSession(b)]
	if !ok || vs.relay != src {
		return nil
	}
	return vs.p
}

// NewPeerRelayServer returns a peer relay over tr that opens allocations
// with this node's disco key: the key peers find for it in the netmap.
func (c *Conn) NewPeerRelayServer(tr conn.Transport) *peerrelay.Server {
	return peerrelay.NewServer(tr, peerrelay.Options{DiscoKey: c.opts.DiscoKey, Logger: c.log, Clock: c.clock})
}
