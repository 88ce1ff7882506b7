// Package magicsock is the path layer beneath the WireGuard engine: a
// conn.Transport whose endpoints are peers, not addresses. For each peer it
// keeps the UDP addresses the peer may be reached at (reported through the
// netmap, learned from authenticated packets, announced in "call me maybe"
// messages), probes them with authenticated disco pings (see disco.go),
// sends data over the lowest-latency address that answered within the last
// few seconds, and otherwise over the relay (when one is set) while it
// keeps probing — so a session moves between direct and relayed paths
// without the engine noticing or a handshake being lost. Where no direct
// path works, an approved peer relay (peerrelay.go) carries the data over
// UDP before the TCP relay does. Disco messages, peer relay messages and
// STUN answers share the WireGuard socket and are taken out of the batches
// before the engine sees them. Path reports say why a path is not direct
// (PathReason).
//
// What a peer says about addresses is a claim, never a proof: addresses
// from the netmap, call-me-maybe, a ping's source or an authenticated
// WireGuard packet are only candidates to probe. An address is bound to a
// peer (incoming datagrams from it labelled with the peer's endpoint) only
// once a pong sealed with that peer's disco key answers a ping we sent to
// that address; an address two peers both proved is labelled with neither,
// and the engine's keys decide. Pings carry the sender's clock and are
// refused when replayed, and disco handling is rate limited per source.
package magicsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/peerrelay"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/stun"
)

// EndpointPrefix starts the endpoint strings that name a peer rather than
// an address ("peer:" + base64 public key), as the daemon configures them.
const EndpointPrefix = "peer:"

// Relay is what the layer needs from a relay client.
type Relay interface {
	// Send relays one packet to the node with key dst.
	Send(dst pubkey.Node, pkt []byte) error
}

// BatchRelay is a Relay that can also write many packets at once; the
// layer then sends what has queued up for the relay as one batch (one
// write to the relay session instead of one per packet).
type BatchRelay interface {
	Relay
	// SendBatch relays pkts[i] to the node dsts[i].
	SendBatch(dsts []pubkey.Node, pkts [][]byte) error
}

// PeerInfo is what the netmap says about a peer.
type PeerInfo struct {
	Key       pubkey.Node
	DiscoKey  pubkey.Disco // zero: no probing
	Endpoints []netip.AddrPort
	// Plain marks a stock WireGuard peer (a WireGuard-only member this
	// node is the gateway of): no disco, no relay. Its packets go to the
	// address its last authenticated packet came from, as WireGuard roams.
	Plain bool
}

// Options configure a Conn.
type Options struct {
	NodeKey  pubkey.Node      // this node's key, sent in pings
	DiscoKey noise.PrivateKey // this node's disco private key
	Logger   *slog.Logger
	// Clock is the layer's source of time: probes, heartbeats, the trust
	// and fallback windows, STUN and the disco limits run on it. nil is
	// the real clock; tests pass a clock.Fake.
	Clock clock.Clock
}

// Stats counts the layer's own traffic.
type Stats struct {
	DiscoSent, DiscoRecv, DiscoBad atomic.Uint64
	DiscoOpening                   atomic.Uint64 // of DiscoSent: pings with a short time to live, opening our NAT (open.go)
	DiscoReplayed                  atomic.Uint64 // pings refused as replays (seen, or older than the window)
	DiscoRateLimited               atomic.Uint64 // disco packets dropped by the per-source limit
	RelaySent, RelayRecv           atomic.Uint64
	RelayDrops                     atomic.Uint64 // received from the relay, dropped: the layer was closed
	RelayWaits                     atomic.Uint64 // received from the relay while the engine was behind: the relay's reader waited
	RelaySendDrops                 atomic.Uint64 // to the relay, dropped: its send queue was full
	NoPath                         atomic.Uint64 // sends dropped: no address, no relay
	// Peer relays (peerrelay.go).
	PeerRelaySent, PeerRelayRecv atomic.Uint64 // data through peer relays
	PeerRelayCtlSent             atomic.Uint64 // allocations sent
	PeerRelayRefused             atomic.Uint64 // allocations refused (the policy does not let the peer use the relay)
	PeerRelayBad                 atomic.Uint64 // control messages not from a relay we use, failing to open, or answering nothing we asked
	PeerRelayDrops               atomic.Uint64 // data messages for no session of ours (or from another address than its relay)
}

// Conn is the path layer. It implements conn.Transport.
type Conn struct {
	udp      conn.Transport
	ttl      conn.TTLSender // udp, if it can send with a chosen time to live (nil: it cannot)
	opts     Options
	discoPub pubkey.Disco
	log      *slog.Logger
	clock    clock.Clock

	// The prober's timer (see tick); ticking is false while closed.
	tickMu  sync.Mutex
	ticker  clock.Timer
	ticking bool

	mu      sync.RWMutex
	peers   map[pubkey.Node]*peerEP
	byAddr  map[netip.AddrPort]*peerEP
	byDisco map[pubkey.Disco]*peerEP
	raws    map[netip.AddrPort]*rawEP
	// contested are addresses more than one peer proved (pongs from each):
	// they are bound to no peer, so the engine's keys decide.
	contested map[netip.AddrPort]bool
	limiter   discoLimiter
	epoch     time.Time // our ping clock counts from here
	relay     Relay
	local     []netip.AddrPort // our endpoints, for call-me-maybe
	stun      stunState
	// Peer relays we may use, and our sessions at them by ID.
	peerRelays  []*relayTarget
	viaSessions map[uint64]viaSession
	viaDrop     atomic.Bool   // a peer gave its session up: prune viaSessions
	lastAlloc   atomic.Uint64 // clock of the last allocation sent

	relayIn  chan relayPacket
	relayOut chan relayPacket // packets to relay (src is the destination)
	stop     chan struct{}
	running  sync.WaitGroup
	open     bool
	port     uint16 // bound UDP port

	Stats Stats
}

type relayPacket struct {
	src pubkey.Node // the sender (relayIn) or the destination (relayOut)
	b   []byte
	buf *[]byte // b's pooled buffer (relayBufs)
}

var _ conn.Transport = (*Conn)(nil)

// New returns a path layer over a UDP transport (opened by Open).
func New(udp conn.Transport, o Options) *Conn {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	clk := clock.Or(o.Clock)
	ttl, _ := udp.(conn.TTLSender)
	return &Conn{udp: udp, ttl: ttl, opts: o, discoPub: pubkey.Disco{PublicKey: o.DiscoKey.PublicKey()}, log: o.Logger, clock: clk,
		peers: map[pubkey.Node]*peerEP{}, byAddr: map[netip.AddrPort]*peerEP{},
		byDisco: map[pubkey.Disco]*peerEP{}, raws: map[netip.AddrPort]*rawEP{},
		contested: map[netip.AddrPort]bool{}, viaSessions: map[uint64]viaSession{}, limiter: newDiscoLimiter(), epoch: clk.Now(),
		relayIn: make(chan relayPacket, 512), relayOut: make(chan relayPacket, relaySendQueue)}
}

// DiscoPublic is this node's disco public key (for the netmap).
func (c *Conn) DiscoPublic() pubkey.Disco { return c.discoPub }

// udpPort is the bound UDP port (for tests), 0 if unknown.
func (c *Conn) udpPort() uint16 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.port
}

// BatchSize is the UDP transport's.
func (c *Conn) BatchSize() int { return c.udp.BatchSize() }

// SetMark sets the mark on the UDP sockets.
func (c *Conn) SetMark(m uint32) error { return c.udp.SetMark(m) }

// Open opens the UDP transport and starts probing. The receive functions
// are the UDP ones (filtered) plus one delivering relayed packets.
func (c *Conn) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := c.udp.Open(port)
	if err != nil {
		return nil, 0, err
	}
	c.mu.Lock()
	c.port = actual
	c.stop = make(chan struct{})
	c.open = true
	c.mu.Unlock()
	out := make([]conn.ReceiveFunc, 0, len(fns)+1)
	for _, fn := range fns {
		out = append(out, c.filter(fn))
	}
	out = append(out, c.receiveRelay(c.stop))
	c.running.Add(1)
	go c.relayWriter(c.stop)
	c.startProber()
	return out, actual, nil
}

// Close closes the UDP transport and stops probing.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.open {
		close(c.stop)
		c.open = false
	}
	c.mu.Unlock()
	c.stopProber()
	err := c.udp.Close()
	c.running.Wait()
	return err
}

// ParseEndpoint accepts "peer:KEY" (a peer's endpoint) or an address.
func (c *Conn) ParseEndpoint(s string) (conn.Endpoint, error) {
	if k, ok := strings.CutPrefix(s, EndpointPrefix); ok {
		key, err := noise.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("magicsock: endpoint %q: %w", s, err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.peerLocked(pubkey.Node{PublicKey: key}), nil
	}
	return c.udp.ParseEndpoint(s)
}

// PeerEndpoint is the endpoint string for a peer.
func PeerEndpoint(k pubkey.Node) string { return EndpointPrefix + k.String() }

func (c *Conn) peerLocked(key pubkey.Node) *peerEP {
	p := c.peers[key]
	if p == nil {
		p = newPeerEP(c, key)
		c.peers[key] = p
	}
	return p
}

// SetPeers replaces what the netmap says about the peers; peers not listed
// are forgotten.
func (c *Conn) SetPeers(peers []PeerInfo) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := map[pubkey.Node]bool{}
	for _, pi := range peers {
		keep[pi.Key] = true
		p := c.peerLocked(pi.Key)
		p.mu.Lock()
		p.plain = pi.Plain
		if p.disco != pi.DiscoKey {
			delete(c.byDisco, p.disco)
			p.disco, p.shared = pi.DiscoKey, nil
			p.resetPingsLocked()
			if !pi.DiscoKey.IsZero() && !pi.DiscoKey.IsLowOrder() {
				p.shared = sharedKey(c.opts.DiscoKey, pi.DiscoKey)
				c.byDisco[pi.DiscoKey] = p
			}
		}
		// Reported addresses are claims: candidates to probe, bound to the
		// peer only when it answers there.
		p.setReportedLocked(pi.Endpoints, now)
		p.mu.Unlock()
	}
	for k, p := range c.peers {
		if !keep[k] {
			delete(c.peers, k)
			delete(c.byDisco, p.disco)
			c.viaDrop.Store(true) // its peer relay session, if any, goes at the next prune
		}
	}
	for a, p := range c.byAddr {
		if c.peers[p.key] != p {
			delete(c.byAddr, a)
		}
	}
}

// SetNodeKey changes the node key sent in pings (after a key rotation).
func (c *Conn) SetNodeKey(k pubkey.Node) {
	c.mu.Lock()
	c.opts.NodeKey = k
	c.mu.Unlock()
}

// SetRelay sets (or with nil clears) the relay used when no direct path
// works.
func (c *Conn) SetRelay(r Relay) {
	c.mu.Lock()
	c.relay = r
	c.mu.Unlock()
}

// SetLocalEndpoints sets the addresses this node announces in call-me-maybe.
func (c *Conn) SetLocalEndpoints(eps []netip.AddrPort) {
	c.mu.Lock()
	c.local = append([]netip.AddrPort(nil), eps...)
	c.mu.Unlock()
}

// PeerPath reports the path to a peer (PathNone for an unknown peer).
func (c *Conn) PeerPath(k pubkey.Node) Path {
	now := c.clock.Now()
	c.mu.RLock()
	p, relay, blocked := c.peers[k], c.relay != nil, c.udpBlockedLocked(now)
	c.mu.RUnlock()
	if p == nil {
		return Path{Kind: PathNone}
	}
	return p.Path(relay, blocked)
}

// learn records that the engine authenticated a packet from udp as peer
// key's, and returns the peer's endpoint. The address becomes a candidate
// (and the best guess while nothing is proven), probed at once; it is not
// bound to the peer: a packet can be replayed from anywhere, only a pong
// proves a path.
func (c *Conn) learn(key pubkey.Node, udp conn.Endpoint) conn.Endpoint {
	addr := udp.Addr()
	c.mu.RLock()
	p := c.peers[key]
	c.mu.RUnlock()
	if p == nil {
		c.mu.Lock()
		p = c.peerLocked(key)
		c.mu.Unlock()
	}
	now := c.clock.Now()
	p.mu.Lock()
	if p.plain {
		// WireGuard's roaming: the engine authenticated this packet.
		p.plainUDP = udp
		p.mu.Unlock()
		return p
	}
	cand := p.candidateLocked(addr)
	cand.heard = now
	if cand.udp == nil {
		cand.udp = udp
	}
	probe := p.shared != nil && now.Sub(cand.lastPong) >= trustFor && now.Sub(cand.pinged) >= probeEvery
	p.mu.Unlock()
	if probe {
		c.ping(p, addr, now)
	}
	return p
}

// bindLocked binds addr to p, which just proved it (a pong from addr to
// our ping, sealed with p's disco key). When another peer proved the same
// address and still answers there, the address is contested and bound to
// neither. c.mu is held.
func (c *Conn) bindLocked(addr netip.AddrPort, p *peerEP, now time.Time) {
	if c.contested[addr] || (c.byAddr[addr] != nil && c.byAddr[addr] != p) {
		if c.othersProvedLocked(addr, p, now) {
			if !c.contested[addr] && len(c.contested) >= 4096 {
				clear(c.contested)
			}
			c.contested[addr] = true
			delete(c.byAddr, addr)
			return
		}
		delete(c.contested, addr)
	}
	c.byAddr[addr] = p
}

// othersProvedLocked reports whether a peer other than p answered at addr
// within the trust window. c.mu is held.
func (c *Conn) othersProvedLocked(addr netip.AddrPort, p *peerEP, now time.Time) bool {
	for _, q := range c.peers {
		if q == p {
			continue
		}
		q.mu.Lock()
		cand := q.cands[addr]
		proved := cand != nil && now.Sub(cand.lastPong) < trustFor
		q.mu.Unlock()
		if proved {
			return true
		}
	}
	return false
}

// filter wraps a UDP receive function: disco and STUN datagrams are
// handled here and removed from the batch; the others get their peer's
// endpoint when the address is known, a raw endpoint otherwise.
func (c *Conn) filter(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			n, err := fn(bufs, sizes, eps)
			if err != nil {
				return n, err
			}
			w := 0
			c.mu.RLock()
			for i := 0; i < n; i++ {
				b := bufs[i][:sizes[i]]
				if peerrelay.IsData(b) {
					p := c.viaPeerLocked(b, eps[i].Addr())
					if p == nil {
						c.Stats.PeerRelayDrops.Add(1)
						continue
					}
					sizes[w] = copy(bufs[w], b[peerrelay.DataHeaderLen:])
					eps[w] = p
					w++
					c.Stats.PeerRelayRecv.Add(1)
					continue
				}
				if peerrelay.IsControl(b) {
					c.mu.RUnlock()
					c.handleRelayControl(b, eps[i].Addr(), c.clock.Now())
					c.mu.RLock()
					continue
				}
				if isDisco(b) || stun.Is(b) {
					c.mu.RUnlock()
					if isDisco(b) {
						c.handleDisco(b, eps[i].Addr(), pubkey.Node{}, c.clock.Now())
					} else {
						c.handleSTUN(b, eps[i].Addr())
					}
					c.mu.RLock()
					continue
				}
				ep := eps[i]
				if p := c.byAddr[ep.Addr()]; p != nil {
					ep = p
				} else if r := c.raws[ep.Addr()]; r != nil {
					ep = r
				} else {
					ep = c.rawLocked(ep)
				}
				if w != i {
					sizes[w] = copy(bufs[w], b)
				}
				eps[w] = ep
				w++
			}
			c.mu.RUnlock()
			if w > 0 {
				return w, nil
			}
		}
	}
}

// rawLocked returns a raw endpoint for an unknown address (read lock held;
// it upgrades briefly). The table is bounded.
func (c *Conn) rawLocked(udp conn.Endpoint) conn.Endpoint {
	c.mu.RUnlock()
	c.mu.Lock()
	r := c.raws[udp.Addr()]
	if r == nil {
		if len(c.raws) >= 4096 {
			clear(c.raws)
		}
		r = &rawEP{c: c, udp: udp}
		c.raws[udp.Addr()] = r
	}
	c.mu.Unlock()
	c.mu.RLock()
	return r
}

// Send sends a batch to an endpoint: a peer's over its current path.
func (c *Conn) Send(bufs [][]byte, ep conn.Endpoint) error {
	switch e := ep.(type) {
	case *peerEP:
		return c.sendPeer(bufs, e)
	case *rawEP:
		return c.udp.Send(bufs, e.udp)
	}
	return c.udp.Send(bufs, ep)
}

var errNoPath = errors.New("magicsock: no path to peer")

func (c *Conn) sendPeer(bufs [][]byte, p *peerEP) error {
	now := c.clock.Now()
	p.mu.Lock()
	p.lastActive = now
	if p.plain {
		// A stock WireGuard peer: where it last authenticated from, never
		// the relay (it has no session there).
		udp := p.plainUDP
		p.mu.Unlock()
		if udp == nil {
			c.Stats.NoPath.Add(1)
			return errNoPath
		}
		return c.udp.Send(bufs, udp)
	}
	addr, trusted, ok := p.pathLocked(now)
	var udp conn.Endpoint
	if ok {
		udp = p.udpLocked(c, addr)
	}
	crosses := trusted || (ok && p.crossesLocked(addr, now))
	var via viaState
	if v := p.viaLocked(now); v != nil && !trusted {
		via = *v
	}
	p.mu.Unlock()
	if trusted {
		return c.udp.Send(bufs, udp)
	}
	if via.relay != nil {
		if ok && udp != nil && crosses {
			c.udp.Send(bufs, udp) // the best guess, as below
		}
		return c.sendVia(bufs, via)
	}
	c.mu.RLock()
	relay := c.relay
	c.mu.RUnlock()
	var err error
	if relay != nil {
		for _, b := range bufs {
			c.queueRelay(p.key, b)
		}
	}
	if ok && udp != nil {
		// Also try the best guess: on a LAN or an open path data flows at
		// once, before any probe has been answered. Not while the peer's
		// NAT may still have to be opened: through a NAT that keeps
		// unsolicited datagrams the guess would take our port there.
		if relay == nil {
			err = c.udp.Send(bufs, udp)
		} else if crosses {
			c.udp.Send(bufs, udp)
		}
	} else if relay == nil {
		err = errNoPath
		if c.Stats.NoPath.Add(1) == 1 {
			c.log.Info("no path to a peer yet (no address and no relay): packets dropped until one is known", "peer", p.key.String())
		}
	}
	return err
}

// udpLocked returns (caching) the UDP endpoint for a candidate address.
func (p *peerEP) udpLocked(c *Conn, addr netip.AddrPort) conn.Endpoint {
	cand := p.cands[addr]
	if cand != nil && cand.udp != nil {
		return cand.udp
	}
	ep, err := c.udp.ParseEndpoint(addr.String())
	if err != nil {
		return nil
	}
	if cand != nil {
		cand.udp = ep
	}
	return ep
}
