package peerrelay

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/ratelimit"
)

// Session limits.
const (
	// SideIdle is how long a session side stays bound without a fresh
	// allocation from its node (nodes refresh every few seconds while they
	// use the session); a session with both sides idle is forgotten.
	SideIdle = 30 * time.Second
	// MaxSessions bounds the sessions of one relay, maxPerNode those one
	// node takes part in.
	MaxSessions = 4096
	maxPerNode  = 64
)

// Client is a node the coordination server allows to use this relay.
type Client struct {
	Key   pubkey.Node
	Disco pubkey.Disco
}

// Options configure a Server.
type Options struct {
	DiscoKey noise.PrivateKey // the relay node's disco private key
	Logger   *slog.Logger
	Clock    clock.Clock // nil: the real clock
}

// Stats counts the relay's work and what it dropped.
type Stats struct {
	Forwarded      atomic.Uint64 // data messages forwarded
	Allocated      atomic.Uint64 // allocations answered with a session
	Refused        atomic.Uint64 // allocations refused: the peer is not allowed here, or the relay is full
	UnknownSession atomic.Uint64 // data for a session the relay does not have
	WrongSource    atomic.Uint64 // data for a session, from an address bound to neither side
	PeerUnbound    atomic.Uint64 // data for a session whose other side is not bound (yet)
	Unauthorized   atomic.Uint64 // control messages from keys not allowed here, or failing to open
	Replayed       atomic.Uint64 // allocations with a clock not newer than the node's last
	RateLimited    atomic.Uint64 // packets from sources without a session, over the per-source limit
	Malformed      atomic.Uint64 // neither data nor control
}

type clientState struct {
	key       pubkey.Node
	shared    *[32]byte
	lastClock uint64
	sessions  int
}

type pair struct{ lo, hi pubkey.Node }

func pairOf(a, b pubkey.Node) pair {
	for i := range a.PublicKey {
		if a.PublicKey[i] != b.PublicKey[i] {
			if a.PublicKey[i] < b.PublicKey[i] {
				return pair{a, b}
			}
			return pair{b, a}
		}
	}
	return pair{a, b}
}

// session joins two nodes; side i is keys[i], bound to addrs[i] (eps[i])
// by its last allocation at seen[i].
type session struct {
	id    uint64
	keys  [2]pubkey.Node
	addrs [2]netip.AddrPort
	eps   [2]conn.Endpoint
	seen  [2]time.Time
}

// Server is a peer relay on a UDP transport of its own.
type Server struct {
	tr       conn.Transport
	log      *slog.Logger
	clk      clock.Clock
	pub      pubkey.Disco
	priv     noise.PrivateKey
	limiter  *ratelimit.Limiter
	mu       sync.RWMutex
	clients  map[pubkey.Disco]*clientState
	byNode   map[pubkey.Node]*clientState
	pairs    map[pair]*session
	sessions map[uint64]*session
	running  sync.WaitGroup
	Stats    Stats
}

// NewServer returns a relay over tr (opened by Start). It serves no one
// until SetClients names the nodes allowed.
func NewServer(tr conn.Transport, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	clk := clock.Or(o.Clock)
	return &Server{tr: tr, log: o.Logger, clk: clk, priv: o.DiscoKey,
		pub:     pubkey.Disco{PublicKey: o.DiscoKey.PublicKey()},
		limiter: ratelimit.New(clk.Now),
		clients: map[pubkey.Disco]*clientState{}, byNode: map[pubkey.Node]*clientState{},
		pairs: map[pair]*session{}, sessions: map[uint64]*session{}}
}

// Start opens the transport on port and serves until Close; it returns
// the port bound.
func (s *Server) Start(port uint16) (uint16, error) {
	fns, actual, err := s.tr.Open(port)
	if err != nil {
		return 0, err
	}
	for _, fn := range fns {
		s.running.Add(1)
		go s.serve(fn)
	}
	return actual, nil
}

// Close stops the relay: every session ends.
func (s *Server) Close() error {
	err := s.tr.Close()
	s.running.Wait()
	s.limiter.Close()
	return err
}

// SetClients replaces the nodes allowed to use the relay. Sessions with a
// node no longer allowed end at once.
func (s *Server) SetClients(cs []Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clients := map[pubkey.Disco]*clientState{}
	byNode := map[pubkey.Node]*clientState{}
	for _, c := range cs {
		if c.Disco.IsZero() || c.Disco.IsLowOrder() {
			continue
		}
		st := s.byNode[c.Key]
		if st == nil || s.clients[c.Disco] != st {
			st = &clientState{key: c.Key, shared: SharedKey(s.priv, c.Disco)}
		}
		clients[c.Disco], byNode[c.Key] = st, st
	}
	s.clients, s.byNode = clients, byNode
	for p, ss := range s.pairs {
		if byNode[ss.keys[0]] == nil || byNode[ss.keys[1]] == nil {
			s.dropLocked(p, ss)
		}
	}
}

func (s *Server) dropLocked(p pair, ss *session) {
	delete(s.pairs, p)
	delete(s.sessions, ss.id)
	for _, k := range ss.keys {
		if c := s.byNode[k]; c != nil && c.sessions > 0 {
			c.sessions--
		}
	}
}

// Sessions is the number of sessions held.
func (s *Server) Sessions() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sessions)
}

func (s *Server) serve(fn conn.ReceiveFunc) {
	defer s.running.Done()
	const batch = 32
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	sizes, eps := make([]int, batch), make([]conn.Endpoint, batch)
	// Data for one destination that arrived together leaves together: one
	// send (with segmentation offload where the transport has it).
	out := make([][]byte, 0, batch)
	var outTo conn.Endpoint
	flush := func() {
		if len(out) > 0 && s.tr.Send(out, outTo) == nil {
			s.Stats.Forwarded.Add(uint64(len(out)))
		}
		clear(out)
		out, outTo = out[:0], nil
	}
	for {
		n, err := fn(bufs, sizes, eps)
		if err != nil {
			return
		}
		for i := range n {
			b := bufs[i][:sizes[i]]
			switch {
			case IsData(b):
				if to := s.forward(b, eps[i].Addr()); to != nil {
					if to != outTo {
						flush()
					}
					out, outTo = append(out, b), to
				}
			case IsControl(b):
				if s.limited(eps[i].Addr()) {
					continue
				}
				s.handleControl(b, eps[i])
			default:
				s.Stats.Malformed.Add(1)
				s.limited(eps[i].Addr())
			}
		}
		flush()
	}
}

// limited charges a packet to its source's bucket: control messages (a box
// to open) and packets outside any session. It reports whether the packet
// is over the limit (then counted and dropped).
func (s *Server) limited(src netip.AddrPort) bool {
	if s.limiter.Allow(src.Addr()) {
		return false
	}
	s.Stats.RateLimited.Add(1)
	return true
}

// forward returns where a data message goes: the other side of its
// session, from the side bound at src; anything else is dropped and
// counted (nil).
func (s *Server) forward(b []byte, src netip.AddrPort) conn.Endpoint {
	s.mu.RLock()
	ss := s.sessions[DataSession(b)]
	var to conn.Endpoint
	var known bool
	if ss != nil {
		for i := range 2 {
			if ss.addrs[i] == src && ss.addrs[i].IsValid() {
				known = true
				to = ss.eps[1-i]
			}
		}
	}
	s.mu.RUnlock()
	switch {
	case ss == nil:
		s.Stats.UnknownSession.Add(1)
		s.limited(src)
	case !known:
		s.Stats.WrongSource.Add(1)
		s.limited(src)
	case to == nil:
		s.Stats.PeerUnbound.Add(1)
	}
	return to
}

// handleControl answers an allocation from an allowed node: it binds the
// node's side of the session with the peer to the address the allocation
// came from, and answers there.
func (s *Server) handleControl(b []byte, src conn.Endpoint) {
	s.mu.RLock()
	c := s.clients[ControlSender(b)]
	s.mu.RUnlock()
	if c == nil {
		s.Stats.Unauthorized.Add(1)
		return
	}
	m, err := Open(b, c.shared)
	if err != nil || m.Allocate == nil || m.Allocate.From != c.key || m.Allocate.Peer == c.key {
		s.Stats.Unauthorized.Add(1)
		return
	}
	a := m.Allocate
	now := s.clk.Now()
	s.mu.Lock()
	if s.clients[ControlSender(b)] != c {
		s.mu.Unlock()
		return // replaced meanwhile
	}
	if a.Clock <= c.lastClock {
		s.mu.Unlock()
		s.Stats.Replayed.Add(1)
		return
	}
	c.lastClock = a.Clock
	resp := Allocated{Tx: a.Tx, Status: StatusRefused}
	if ss := s.bindLocked(c, a.Peer, src, now); ss != nil {
		side := 0
		if ss.keys[1] == c.key {
			side = 1
		}
		other := 1 - side
		resp.Status, resp.Session = StatusOK, ss.id
		resp.PeerBound = ss.eps[other] != nil && now.Sub(ss.seen[other]) < SideIdle
	}
	s.mu.Unlock()
	if resp.Status == StatusOK {
		s.Stats.Allocated.Add(1)
	} else {
		s.Stats.Refused.Add(1)
	}
	s.tr.Send([][]byte{Seal(s.pub, c.shared, Message{Allocated: &resp})}, src)
}

// bindLocked finds (or makes) the session of c with peer and binds c's
// side to src; nil when the peer may not use the relay or a limit is hit.
func (s *Server) bindLocked(c *clientState, peer pubkey.Node, src conn.Endpoint, now time.Time) *session {
	pc := s.byNode[peer]
	if pc == nil {
		return nil // the policy does not let the peer use this relay
	}
	p := pairOf(c.key, peer)
	ss := s.pairs[p]
	if ss != nil && now.Sub(ss.seen[0]) >= SideIdle && now.Sub(ss.seen[1]) >= SideIdle {
		s.dropLocked(p, ss)
		ss = nil
	}
	if ss == nil {
		if len(s.sessions) >= MaxSessions {
			s.sweepLocked(now)
		}
		if len(s.sessions) >= MaxSessions || c.sessions >= maxPerNode || pc.sessions >= maxPerNode {
			return nil
		}
		var id [8]byte
		for {
			rand.Read(id[:])
			if v := binary.BigEndian.Uint64(id[:]); v != 0 && s.sessions[v] == nil {
				ss = &session{id: v, keys: [2]pubkey.Node{p.lo, p.hi}}
				break
			}
		}
		s.pairs[p], s.sessions[ss.id] = ss, ss
		c.sessions++
		pc.sessions++
	}
	side := 0
	if ss.keys[1] == c.key {
		side = 1
	}
	ss.addrs[side], ss.eps[side], ss.seen[side] = src.Addr(), src, now
	for i := range 2 {
		if ss.eps[i] != nil && now.Sub(ss.seen[i]) >= SideIdle {
			ss.addrs[i], ss.eps[i] = netip.AddrPort{}, nil
		}
	}
	return ss
}

// sweepLocked forgets sessions idle on both sides.
func (s *Server) sweepLocked(now time.Time) {
	for p, ss := range s.pairs {
		if now.Sub(ss.seen[0]) >= SideIdle && now.Sub(ss.seen[1]) >= SideIdle {
			s.dropLocked(p, ss)
		}
	}
}
