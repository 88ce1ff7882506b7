package magicsock

import (
	"crypto/rand"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// Path timing.
const (
	// trustFor is how long a pong makes a direct path usable for data: with
	// heartbeats every 1.5 s, two missed pongs in a row lose it.
	trustFor = 4 * time.Second
	// heartbeat is how often a trusted path in use is probed again.
	heartbeat = time.Second
	// missAfter is how long a heartbeat may go unanswered (at least; 4 RTTs
	// on slow paths) before the path is no longer trusted: a cut direct
	// path moves to the relay within about two seconds, before TCP's
	// retransmission timer has backed off far.
	missAfter = time.Second
	// probeEvery is how often an untrusted peer's candidates are probed
	// while the peer is in use.
	probeEvery = 2 * time.Second
	// activeFor is how long after the last packet a peer counts as in use:
	// its path keeps being probed, which also holds the NAT mappings open.
	activeFor = 2 * time.Minute
	// pingTimeout forgets an unanswered ping.
	pingTimeout = 5 * time.Second
	// maxCandidates bounds the addresses kept per peer.
	maxCandidates = 32
	// pingWindow is how far behind the newest ping a peer's ping may be
	// (by the peer's clock) and still be accepted; the IDs of accepted
	// pings are remembered that long, so a replay is refused either way.
	pingWindow = 10 * time.Second
	// maxPingsSeen bounds the remembered ping IDs per peer; past it, new
	// pings are refused until the window moves on (fail closed).
	maxPingsSeen = 1024
)

// PathKind says how packets to a peer travel.
type PathKind string

// Path kinds.
const (
	PathNone   PathKind = "none"   // nothing known yet
	PathDirect PathKind = "direct" // a probed UDP address
	PathRelay  PathKind = "relay"  // through the relay
	PathGuess  PathKind = "guess"  // an unprobed address (no probes answered yet)
	// PathPlain: a plain WireGuard peer (PeerInfo.Plain) at the address of
	// its last authenticated packet.
	PathPlain PathKind = "wireguard"
	// PathPeerRelay: through a peer relay, UDP end to end (peerrelay.go).
	PathPeerRelay PathKind = "peer-relay"
)

// PathReason says why a peer's path is not direct.
type PathReason string

// Reasons a path is not direct, first match wins.
const (
	ReasonNone PathReason = "" // direct
	// ReasonUDPBlocked: our STUN servers have not answered over UDP for a
	// while (udpBlockedAfter): UDP does not get out, or not back in.
	ReasonUDPBlocked PathReason = "udp-blocked"
	// ReasonNoProbeKey: the peer has no disco key, so it cannot be probed.
	ReasonNoProbeKey PathReason = "no-probe-key"
	// ReasonNoCandidate: no address of the peer is known (it reported
	// none, none was learned).
	ReasonNoCandidate PathReason = "no-candidate"
	// ReasonProbesUnanswered: we pinged the peer's candidates and no pong
	// came back within the trust window (NATs or firewalls in the way).
	ReasonProbesUnanswered PathReason = "probes-unanswered"
	// ReasonNotProbed: candidates are known but none was pinged yet (the
	// peer has not been in use).
	ReasonNotProbed PathReason = "not-probed"
)

// Path is a peer's current path, for status displays.
type Path struct {
	Kind PathKind
	Addr netip.AddrPort // the UDP address, for direct and guess
	RTT  time.Duration  // of the last probe on the direct path
	// Jitter is the smoothed variation between successive probe RTTs on
	// the direct path (RFC 3550's interarrival jitter estimator: each new
	// sample moves it by 1/16 of the difference).
	Jitter time.Duration
	// Reason says why the path is not direct (empty when it is).
	Reason PathReason
	// Via is the peer relay, for PathPeerRelay.
	Via pubkey.Node
}

// candidate is one UDP address a peer may be reached at.
type candidate struct {
	lastPong time.Time
	rtt      time.Duration
	jitter   time.Duration // EWMA of |rtt - previous rtt|
	heard    time.Time     // last packet the engine authenticated from it (a guess, not a proof)
	pingRecv time.Time     // last fresh ping from it
	pinged   time.Time     // last ping we sent to it
	udp      conn.Endpoint
}

type pendingPing struct {
	to   netip.AddrPort
	sent time.Time
}

// peerEP is the engine's endpoint for one peer: whichever path the layer
// chooses. It is stable for the peer's lifetime, so the engine's roaming
// check (==) sees one endpoint however the paths change.
type peerEP struct {
	c   *Conn
	key pubkey.Node

	mu         sync.Mutex
	disco      pubkey.Disco // zero: the peer does not probe
	shared     *[32]byte    // box key with disco
	cands      map[netip.AddrPort]*candidate
	reported   []netip.AddrPort // from the netmap
	best       netip.AddrPort   // lowest-RTT trusted candidate
	bestPing   time.Time        // oldest unanswered ping to best (zero: none)
	bestUDP    conn.Endpoint
	pings      map[txID]pendingPing
	lastActive time.Time
	lastProbe  time.Time
	wasTrusted bool      // the path was trusted at the prober's last round
	lastCall   time.Time // last call-me-maybe we sent
	calledAt   time.Time // last call-me-maybe the relay took
	calledPrev time.Time // the one before it
	callFailed bool      // the last call could not be sent (no opening, see open.go)
	// lastCallRecv is the last call-me-maybe from the peer acted on.
	lastCallRecv time.Time
	synthetic    netip.AddrPort
	// plain: a stock WireGuard peer (PeerInfo.Plain); plainUDP is where
	// its last authenticated packet came from.
	plain    bool
	plainUDP conn.Endpoint

	// via is the peer's session at a peer relay; refused holds the relay
	// addresses that refused (or did not answer) an allocation for it,
	// until when.
	via     viaState
	refused map[netip.AddrPort]time.Time

	// Replay protection for the peer's pings (reset with its disco key).
	pingNewest uint64          // newest ping clock accepted
	pingSeen   map[txID]uint64 // accepted ping IDs within pingWindow, by clock
}

func newPeerEP(c *Conn, key pubkey.Node) *peerEP {
	return &peerEP{c: c, key: key, cands: map[netip.AddrPort]*candidate{}, pings: map[txID]pendingPing{},
		synthetic: syntheticAddr(key), pingSeen: map[txID]uint64{}, refused: map[netip.AddrPort]time.Time{}}
}

// syntheticAddr is a stable address standing for a node key where no UDP
// address is known (display, per-source limits): fd77:6172:7265:6e00::/64
// plus key bytes.
func syntheticAddr(key pubkey.Node) netip.AddrPort {
	var a [16]byte
	copy(a[:], []byte{0xfd, 0x77, 0x61, 0x72, 0x72, 0x65, 0x6e, 0x00})
	copy(a[8:], key.PublicKey[:8])
	return netip.AddrPortFrom(netip.AddrFrom16(a), 0)
}

// PeerKey is the peer's public key (conn.PeerEndpoint): the engine never
// moves another peer onto this endpoint.
func (p *peerEP) PeerKey() [32]byte { return p.key.PublicKey }

// acceptPingLocked reports whether a ping with ID tx and the sender clock
// is new: not seen within the window and not older than it. It remembers
// the ping.
func (p *peerEP) acceptPingLocked(tx txID, clock uint64) bool {
	window := uint64(pingWindow)
	if p.pingNewest > window && clock < p.pingNewest-window {
		return false // older than the window: a replay, or too late to matter
	}
	if _, seen := p.pingSeen[tx]; seen {
		return false
	}
	if newest := max(p.pingNewest, clock); len(p.pingSeen) >= maxPingsSeen {
		for t, c := range p.pingSeen {
			if newest > window && c < newest-window {
				delete(p.pingSeen, t)
			}
		}
		if len(p.pingSeen) >= maxPingsSeen {
			return false
		}
	}
	p.pingSeen[tx] = clock
	p.pingNewest = max(p.pingNewest, clock)
	return true
}

// resetPingsLocked forgets the replay state (a new disco key).
func (p *peerEP) resetPingsLocked() {
	p.pingNewest = 0
	clear(p.pingSeen)
}

// String is the current path's address, as `wg show` displays it.
func (p *peerEP) String() string { return p.Addr().String() }

// Addr is the direct address in use, else the best guess, else synthetic.
func (p *peerEP) Addr() netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, _, ok := p.pathLocked(p.c.clock.Now()); ok {
		return a
	}
	return p.synthetic
}

// pathLocked returns where data goes: the trusted best, else a guess (the
// last address heard from, else the first reported one); trusted says
// which. ok is false when no address is known.
func (p *peerEP) pathLocked(now time.Time) (addr netip.AddrPort, trusted, ok bool) {
	if p.best.IsValid() {
		if c := p.cands[p.best]; c != nil && now.Sub(c.lastPong) < trustFor &&
			(p.bestPing.IsZero() || now.Sub(p.bestPing) < max(missAfter, 4*c.rtt)) {
			return p.best, true, true
		}
	}
	var guess netip.AddrPort
	var heard time.Time
	for a, c := range p.cands {
		if c.heard.After(heard) {
			guess, heard = a, c.heard
		}
	}
	if guess.IsValid() {
		return guess, false, true
	}
	for _, a := range p.reported {
		if a.Addr().Is4() {
			return a, false, true
		}
	}
	if len(p.reported) > 0 {
		return p.reported[0], false, true
	}
	return netip.AddrPort{}, false, false
}

// Path reports the peer's current path; relay says whether a relay is
// set, udpBlocked whether our UDP looks blocked (for the reason).
func (p *peerEP) Path(relay, udpBlocked bool) Path {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plain {
		if p.plainUDP == nil {
			return Path{Kind: PathNone}
		}
		return Path{Kind: PathPlain, Addr: p.plainUDP.Addr()}
	}
	now := p.c.clock.Now()
	a, trusted, ok := p.pathLocked(now)
	if trusted {
		c := p.cands[a]
		return Path{Kind: PathDirect, Addr: a, RTT: c.rtt, Jitter: c.jitter}
	}
	reason := p.reasonLocked(udpBlocked)
	switch {
	case p.viaLocked(now) != nil:
		return Path{Kind: PathPeerRelay, Via: p.via.relay.info.Key, Reason: reason}
	case relay:
		return Path{Kind: PathRelay, Reason: reason}
	case ok:
		return Path{Kind: PathGuess, Addr: a, Reason: reason}
	}
	return Path{Kind: PathNone, Reason: reason}
}

// reasonLocked says why the peer has no trusted direct path.
func (p *peerEP) reasonLocked(udpBlocked bool) PathReason {
	switch {
	case udpBlocked:
		return ReasonUDPBlocked
	case p.shared == nil:
		return ReasonNoProbeKey
	case len(p.cands) == 0:
		return ReasonNoCandidate
	}
	for _, c := range p.cands {
		if !c.pinged.IsZero() {
			return ReasonProbesUnanswered
		}
	}
	return ReasonNotProbed
}

// candidateLocked returns (creating) the candidate for addr.
func (p *peerEP) candidateLocked(addr netip.AddrPort) *candidate {
	if c := p.cands[addr]; c != nil {
		return c
	}
	if len(p.cands) >= maxCandidates {
		p.evictLocked()
	}
	c := &candidate{}
	p.cands[addr] = c
	return c
}

// evictLocked drops the candidate heard from or answering least recently,
// never the best, and one the netmap reported only when all others are.
func (p *peerEP) evictLocked() {
	var victim netip.AddrPort
	var when time.Time
	first, victimReported := true, false
	for a, c := range p.cands {
		if a == p.best {
			continue
		}
		reported := slices.Contains(p.reported, a)
		if !first && reported && !victimReported {
			continue
		}
		t := c.lastPong
		if c.heard.After(t) {
			t = c.heard
		}
		if first || t.Before(when) || (victimReported && !reported) {
			victim, when, first, victimReported = a, t, false, reported
		}
	}
	if !first {
		delete(p.cands, victim)
	}
}

// setReportedLocked replaces the netmap's addresses for the peer, keeping
// learned candidates that still answer.
func (p *peerEP) setReportedLocked(addrs []netip.AddrPort, now time.Time) {
	p.reported = slices.Clone(addrs)
	for a, c := range p.cands {
		if !slices.Contains(addrs, a) && now.Sub(c.lastPong) > trustFor && now.Sub(c.heard) > trustFor {
			delete(p.cands, a)
		}
	}
	for _, a := range addrs {
		p.candidateLocked(a)
	}
}

// newPingLocked records a ping to addr and returns its transaction ID.
func (p *peerEP) newPingLocked(to netip.AddrPort, now time.Time) txID {
	var tx txID
	rand.Read(tx[:])
	for t, pp := range p.pings {
		if now.Sub(pp.sent) > pingTimeout {
			delete(p.pings, t)
		}
	}
	if len(p.pings) > 4*maxCandidates {
		clear(p.pings)
	}
	p.pings[tx] = pendingPing{to: to, sent: now}
	if c := p.cands[to]; c != nil {
		c.pinged = now
	}
	if to == p.best && p.bestPing.IsZero() {
		p.bestPing = now
	}
	return tx
}

// pongLocked records a pong for tx from addr; it returns false for an
// unknown or mismatched transaction.
func (p *peerEP) pongLocked(tx txID, from netip.AddrPort, now time.Time) bool {
	pp, ok := p.pings[tx]
	if !ok || pp.to != from {
		return false
	}
	delete(p.pings, tx)
	c := p.candidateLocked(from)
	rtt := now.Sub(pp.sent)
	if c.rtt > 0 {
		d := rtt - c.rtt
		if d < 0 {
			d = -d
		}
		c.jitter += (d - c.jitter) / 16
	}
	c.lastPong, c.rtt = now, rtt
	if from == p.best {
		p.bestPing = time.Time{}
	}
	p.chooseBestLocked(now)
	return true
}

// chooseBestLocked picks the trusted candidate with the lowest RTT,
// preferring the current one unless another is clearly (by a third) faster.
func (p *peerEP) chooseBestLocked(now time.Time) {
	var best netip.AddrPort
	var rtt time.Duration
	for a, c := range p.cands {
		if now.Sub(c.lastPong) >= trustFor {
			continue
		}
		if !best.IsValid() || c.rtt < rtt || (c.rtt == rtt && addrLess(a, best)) {
			best, rtt = a, c.rtt
		}
	}
	if cur := p.cands[p.best]; cur != nil && best.IsValid() && best != p.best && now.Sub(cur.lastPong) < trustFor &&
		p.bestPing.IsZero() && cur.rtt*2 <= rtt*3 {
		return // keep a working path unless the new one is clearly better
	}
	if best != p.best {
		p.bestPing = time.Time{}
	}
	p.best = best
}

func addrLess(a, b netip.AddrPort) bool {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Port() < b.Port()
}

// dueProbes returns the addresses to ping now, and marks them pinged.
func (p *peerEP) dueProbesLocked(now time.Time) []netip.AddrPort {
	if p.shared == nil || now.Sub(p.lastActive) > activeFor {
		return nil
	}
	if _, trusted, _ := p.pathLocked(now); trusted {
		if c := p.cands[p.best]; c != nil && now.Sub(c.lastPong) > heartbeat && now.Sub(p.lastProbe) > heartbeat {
			p.lastProbe = now
			return []netip.AddrPort{p.best}
		}
		return nil
	}
	if now.Sub(p.lastProbe) < probeEvery {
		return nil
	}
	p.lastProbe = now
	out := make([]netip.AddrPort, 0, len(p.cands))
	for a := range p.cands {
		out = append(out, a)
	}
	return out
}

// rawEP is the endpoint of a datagram from an address no peer is known at.
// When the engine authenticates the sender it calls FromPeer, which teaches
// the layer that the address belongs to that peer.
type rawEP struct {
	c   *Conn
	udp conn.Endpoint
}

func (r *rawEP) String() string       { return r.udp.String() }
func (r *rawEP) Addr() netip.AddrPort { return r.udp.Addr() }
func (r *rawEP) FromPeer(key [32]byte) conn.Endpoint {
	return r.c.learn(pubkey.Node{PublicKey: key}, r.udp)
}

func (k PathKind) String() string { return string(k) }
