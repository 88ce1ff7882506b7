package magicsock

import (
	"net/netip"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// probeTick is how often the prober looks for due probes.
const probeTick = 250 * time.Millisecond

// callEvery is how often an unprobed peer is asked, through the relay, to
// probe us back ("call me maybe"), which opens both NATs at once.
const callEvery = 5 * time.Second

// callMinGap is the least time between two call-me-maybes from one peer
// that are acted on (honest peers send one per callEvery).
const callMinGap = time.Second

// The prober pings the candidates of peers in use until a direct path
// answers, then keeps the path warm with heartbeats; when the path stops
// answering, pathLocked falls back to the relay by itself and probing
// resumes. It runs on a timer of the layer's clock, every probeTick while
// the layer is open: a virtual clock's Advance runs it synchronously.
func (c *Conn) startProber() {
	c.tickMu.Lock()
	defer c.tickMu.Unlock()
	c.ticking = true
	c.ticker = c.clock.NewTimer(c.tick)
	c.ticker.Reset(probeTick)
}

// stopProber stops the prober; a tick under way finishes first, none
// starts after it returns (until the next Open).
func (c *Conn) stopProber() {
	c.tickMu.Lock()
	defer c.tickMu.Unlock()
	c.ticking = false
	if c.ticker != nil {
		c.ticker.Stop()
	}
}

// tick is one round of the prober.
func (c *Conn) tick() {
	c.tickMu.Lock()
	defer c.tickMu.Unlock()
	if !c.ticking {
		return
	}
	now := c.clock.Now()
	c.probeDue(now)
	c.stunDue(now)
	c.ticker.Reset(probeTick)
}

func (c *Conn) probeDue(now time.Time) {
	c.mu.RLock()
	peers := make([]*peerEP, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	relay := c.relay
	local := c.local
	relays, blocked := c.peerRelays, c.udpBlockedLocked(now)
	c.mu.RUnlock()
	lost := false
	for _, p := range peers {
		c.allocDue(p, now, relays, blocked)
		p.mu.Lock()
		due := p.dueProbesLocked(now)
		_, trusted, _ := p.pathLocked(now)
		if p.wasTrusted && !trusted && now.Sub(p.lastActive) < activeFor {
			lost = true // in use, and its direct path stopped answering
		}
		p.wasTrusted = trusted
		// Probes that only open our NAT need the call right after them
		// (open.go): the peer's answering probes are what crosses.
		opening := false
		for _, a := range due {
			opening = opening || (relay != nil && !p.crossesLocked(a, now))
		}
		call := relay != nil && !trusted && p.shared != nil && len(local) > 0 &&
			now.Sub(p.lastActive) < activeFor &&
			(now.Sub(p.lastCall) >= callEvery || (opening && now.Sub(p.lastCall) >= callMinGap))
		if call {
			p.lastCall = now
		}
		p.mu.Unlock()
		for _, a := range due {
			c.ping(p, a, now)
		}
		if call {
			sent := c.sendDiscoRelay(p, &discoMsg{typ: msgCallMeMaybe, addrs: local})
			p.mu.Lock()
			p.callFailed = !sent
			if sent {
				p.calledPrev, p.calledAt = p.calledAt, now
			}
			p.mu.Unlock()
		}
	}
	c.pruneViaSessions()
	if lost {
		// Our own address may be what changed (a new network, a NAT that
		// rebooted): ask STUN again soon rather than at the next refresh,
		// so that peers learn where we are now.
		c.mu.Lock()
		c.stun.soon = true
		c.mu.Unlock()
	}
}

// Probe pings every candidate of the peer now (for tests and `warren ping`).
func (c *Conn) Probe(k pubkey.Node) {
	c.mu.RLock()
	p := c.peers[k]
	c.mu.RUnlock()
	if p == nil {
		return
	}
	now := c.clock.Now()
	p.mu.Lock()
	p.lastActive, p.lastProbe = now, now
	var addrs []netip.AddrPort
	for a := range p.cands {
		addrs = append(addrs, a)
	}
	p.mu.Unlock()
	for _, a := range addrs {
		c.ping(p, a, now)
	}
}

// ping sends a ping to one of the peer's candidates: with a full time to
// live where it cannot be the first datagram of the flow to reach the
// peer's NAT, else with openTTL, opening our own NAT only (open.go).
func (c *Conn) ping(p *peerEP, to netip.AddrPort, now time.Time) {
	c.mu.RLock()
	nodeKey, relay := c.opts.NodeKey, c.relay
	c.mu.RUnlock()
	p.mu.Lock()
	if p.shared == nil {
		p.mu.Unlock()
		return
	}
	tx := p.newPingLocked(to, now)
	shared := p.shared
	udp := p.udpLocked(c, to)
	full := relay == nil || p.crossesLocked(to, now)
	p.mu.Unlock()
	if udp == nil {
		return
	}
	pkt := seal(c.discoPub, shared, &discoMsg{typ: msgPing, tx: tx, nodeKey: nodeKey, clock: c.pingClock(now)})
	if full {
		if c.udp.Send([][]byte{pkt}, udp) == nil {
			c.Stats.DiscoSent.Add(1)
		}
		return
	}
	if c.ttl.SendTTL(pkt, udp, openTTL) == nil {
		c.Stats.DiscoSent.Add(1)
		c.Stats.DiscoOpening.Add(1)
	}
}

// sendDiscoRelay sends a disco message through the relay; it reports
// whether the relay took it.
func (c *Conn) sendDiscoRelay(p *peerEP, m *discoMsg) bool {
	c.mu.RLock()
	relay := c.relay
	c.mu.RUnlock()
	p.mu.Lock()
	shared := p.shared
	p.mu.Unlock()
	if relay == nil || shared == nil {
		return false
	}
	if relay.Send(p.key, seal(c.discoPub, shared, m)) != nil {
		return false
	}
	c.Stats.DiscoSent.Add(1)
	return true
}

// pingClock is our ping clock at now: nanoseconds since the layer started
// (never 0).
func (c *Conn) pingClock(now time.Time) uint64 {
	return uint64(max(now.Sub(c.epoch), 0)) + 1
}

// handleDisco processes one disco packet that arrived over UDP from src,
// or through the relay from node relayFrom (src invalid). Nothing in it
// binds an address to a peer except a pong answering our ping to that
// address (see bindLocked).
func (c *Conn) handleDisco(b []byte, src netip.AddrPort, relayFrom pubkey.Node, now time.Time) {
	c.Stats.DiscoRecv.Add(1)
	source := src
	if !src.IsValid() {
		source = syntheticAddr(relayFrom)
	}
	if !c.limiter.allow(source, now) {
		c.Stats.DiscoRateLimited.Add(1)
		return
	}
	c.mu.RLock()
	p := c.byDisco[senderKey(b)]
	c.mu.RUnlock()
	if p == nil {
		c.Stats.DiscoBad.Add(1) // not a peer we know: never answered
		return
	}
	p.mu.Lock()
	shared := p.shared
	p.mu.Unlock()
	m, err := open(b, shared)
	if err != nil || (!relayFrom.IsZero() && relayFrom != p.key) {
		c.Stats.DiscoBad.Add(1)
		return
	}
	switch m.typ {
	case msgPing:
		c.handlePing(p, shared, &m, src, now)
	case msgPong:
		if !src.IsValid() {
			return // pongs over the relay say nothing about direct paths
		}
		p.mu.Lock()
		ok := p.pongLocked(m.tx, src, now)
		p.mu.Unlock()
		if !ok {
			c.Stats.DiscoBad.Add(1)
			return
		}
		// The proof: the peer's disco key answered our ping to src.
		c.mu.Lock()
		if c.peers[p.key] == p {
			c.bindLocked(src, p, now)
		}
		c.mu.Unlock()
	case msgCallMeMaybe:
		// Probe every address the peer listed, at once: its probes towards
		// us are on their way, so both NATs open. The list is a claim:
		// candidates to probe, nothing more. At most one per callMinGap per
		// peer: each makes us ping up to maxCallMeMaybe addresses the peer
		// chose, which must not become a way to aim our pings at a target.
		p.mu.Lock()
		if !p.lastCallRecv.IsZero() && now.Sub(p.lastCallRecv) < callMinGap {
			p.mu.Unlock()
			c.Stats.DiscoRateLimited.Add(1)
			return
		}
		// The call does not make the peer "in use" here: the caller repeats
		// it every callEvery while it has data for us, each answered by
		// these pings; were we to count as active and call back, two peers
		// without a direct path would keep each other calling for ever.
		p.lastCallRecv = now
		for _, a := range m.addrs {
			p.candidateLocked(a)
		}
		p.mu.Unlock()
		for _, a := range m.addrs {
			c.ping(p, a, now)
		}
	}
}

// handlePing answers a peer's ping. A replayed one (seen, or older than
// the window) is dropped and counted; one from an older version (no clock)
// is answered and changes nothing. A fresh one over UDP makes its source a
// candidate, probed back while the peer has no trusted path: where a ping
// came from is a claim, as anyone could have sent its bytes from there.
func (c *Conn) handlePing(p *peerEP, shared *[32]byte, m *discoMsg, src netip.AddrPort, now time.Time) {
	if m.nodeKey != p.key {
		c.Stats.DiscoBad.Add(1)
		return
	}
	if m.clock != 0 {
		p.mu.Lock()
		fresh := p.acceptPingLocked(m.tx, m.clock)
		p.mu.Unlock()
		if !fresh {
			c.Stats.DiscoReplayed.Add(1)
			return
		}
	}
	pong := seal(c.discoPub, shared, &discoMsg{typ: msgPong, tx: m.tx, observed: src})
	if !src.IsValid() {
		c.sendRaw(p, pong, netip.AddrPort{}) // a ping over the relay: answer there
		return
	}
	var udp conn.Endpoint
	if m.clock == 0 {
		udp, _ = c.udp.ParseEndpoint(src.String())
	} else {
		p.mu.Lock()
		p.candidateLocked(src).pingRecv = now // the peer's NAT sends from there: it has a mapping towards us
		udp = p.udpLocked(c, src)
		p.mu.Unlock()
	}
	if udp != nil && c.udp.Send([][]byte{pong}, udp) == nil {
		c.Stats.DiscoSent.Add(1)
	}
	if m.clock != 0 && p.needsProbe(now) {
		c.ping(p, src, now)
	}
}

// needsProbe reports whether the peer has no trusted path now.
func (p *peerEP) needsProbe(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, trusted, _ := p.pathLocked(now)
	return !trusted
}

// sendRaw sends a disco packet through the relay.
func (c *Conn) sendRaw(p *peerEP, pkt []byte, _ netip.AddrPort) {
	c.mu.RLock()
	relay := c.relay
	c.mu.RUnlock()
	if relay != nil && relay.Send(p.key, pkt) == nil {
		c.Stats.DiscoSent.Add(1)
	}
}
