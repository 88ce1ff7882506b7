package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// counters are the totals the simulated nodes received.
type counters struct {
	msgs, bytes, full, deltas, keepalives, reconnects, errors atomic.Int64
}

// change is the change being timed: nodes compare each message they apply
// with it and record when it arrived.
type change struct {
	kind     string
	id       uint64      // node changed (endpoint, leave, delete)
	key      pubkey.Node // node joining
	port     uint16      // new endpoint port
	start    time.Time
	at       []time.Duration // per simulated node, 0 until delivered
	left     atomic.Int64
	done     chan struct{}
	excluded int // the index not waited for (-1 for none)
}

func (c *change) deliver(i int, now time.Time) {
	if i < 0 || i == c.excluded || c.at[i] != 0 {
		return
	}
	c.at[i] = max(now.Sub(c.start), 1)
	if c.left.Add(-1) == 0 {
		close(c.done)
	}
}

// matchNode reports whether n carries the change (as added or self).
func (c *change) matchNode(n *netmap.Node) bool {
	switch c.kind {
	case "join":
		return n.Key == c.key
	case "endpoint":
		return n.ID == c.id && hasPort(n.Endpoints, c.port)
	case "leave":
		return n.ID == c.id && !n.Online
	}
	return false
}

func hasPort(eps []netip.AddrPort, port uint16) bool {
	return slices.ContainsFunc(eps, func(e netip.AddrPort) bool { return e.Port() == port })
}

// matchDelta reports whether d carries the change.
func (c *change) matchDelta(d *netmap.Delta) bool {
	if d.Self != nil && c.matchNode(d.Self) {
		return true
	}
	for i := range d.PeersAdded {
		if c.matchNode(&d.PeersAdded[i]) {
			return true
		}
	}
	for i := range d.PeersChanged {
		p := &d.PeersChanged[i]
		switch {
		case p.ID != c.id:
		case c.kind == "endpoint" && p.Endpoints != nil && hasPort(*p.Endpoints, c.port):
			return true
		case c.kind == "leave" && p.Online != nil && !*p.Online:
			return true
		}
	}
	return c.kind == "delete" && slices.Contains(d.PeersRemoved, c.id)
}

// matchMap reports whether a full map already reflects the change (a node
// that reconnected).
func (c *change) matchMap(in *interner, s *state) bool {
	if c.kind == "delete" {
		_, ok := s.find(in, c.id)
		return !ok
	}
	if c.matchNode(in.get(s.self)) {
		return true
	}
	for _, r := range s.peers {
		if c.matchNode(in.get(r)) {
			return true
		}
	}
	return false
}

// interner shares identical nodes between simulated nodes: 10k nodes each
// holding its own copy of 10k peers would need tens of GB. Nodes live in
// fixed chunks and are named by a uint32, so the simulated nodes' peer
// lists hold no pointers for the garbage collector to scan.
type interner struct {
	seed   maphash.Seed
	mu     sync.Mutex // appending
	n      uint32
	chunks [1 << 12]atomic.Pointer[[1 << 14]netmap.Node]
	shards [64]struct {
		sync.Mutex
		m map[uint64][]uint32
	}
}

func newInterner() *interner {
	in := &interner{seed: maphash.MakeSeed()}
	for i := range in.shards {
		in.shards[i].m = map[uint64][]uint32{}
	}
	return in
}

// get returns an interned node, which must not be modified.
func (in *interner) get(r uint32) *netmap.Node { return &in.chunks[r>>14].Load()[r&(1<<14-1)] }

func (in *interner) intern(n *netmap.Node) uint32 {
	// The hash covers what changes; Equal settles collisions.
	var h maphash.Hash
	h.SetSeed(in.seed)
	var buf [8]byte
	u64 := func(v uint64) { binary.LittleEndian.PutUint64(buf[:], v); h.Write(buf[:]) }
	u64(n.ID)
	h.WriteString(n.Name)
	h.Write(n.Key.PublicKey[:])
	h.Write(n.DiscoKey.PublicKey[:])
	for _, e := range n.Endpoints {
		a := e.Addr().As16()
		h.Write(a[:])
		u64(uint64(e.Port()))
	}
	u64(uint64(b2i(n.Online)))
	u64(uint64(n.LastSeen.UnixNano()))
	u64(uint64(n.Expiry.UnixNano()))
	sum := h.Sum64()
	sh := &in.shards[n.ID%uint64(len(in.shards))]
	sh.Lock()
	defer sh.Unlock()
	for _, r := range sh.m[sum] {
		if in.get(r).Equal(n) {
			return r
		}
	}
	in.mu.Lock()
	r := in.n
	in.n++
	ch := in.chunks[r>>14].Load()
	if ch == nil {
		ch = new([1 << 14]netmap.Node)
		in.chunks[r>>14].Store(ch)
	}
	ch[r&(1<<14-1)] = n.Clone()
	in.mu.Unlock()
	sh.m[sum] = append(sh.m[sum], r)
	return r
}

// state is one simulated node's network map: the version, self and the
// peers sorted by ID, as interned nodes.
type state struct {
	version uint64
	full    bool
	self    uint32
	peers   []uint32
	online  int // peers online
}

func (s *state) find(in *interner, id uint64) (int, bool) {
	return slices.BinarySearchFunc(s.peers, id, func(r uint32, id uint64) int {
		switch n := in.get(r); {
		case n.ID < id:
			return -1
		case n.ID > id:
			return 1
		}
		return 0
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// setFull replaces the state with a (decoded, validated) full map.
func (s *state) setFull(in *interner, m *netmap.NetworkMap) {
	s.version, s.full = m.Version, true
	s.self = in.intern(&m.Self)
	s.peers = make([]uint32, len(m.Peers))
	s.online = 0
	for i := range m.Peers {
		s.peers[i] = in.intern(&m.Peers[i])
		s.online += b2i(m.Peers[i].Online)
	}
}

// apply applies d with netmap.Apply's rules (version must match, no
// unknown, duplicate or already present peer), patching shared nodes by
// copy. It skips Apply's whole-map Validate, which is O(peers) per delta:
// proto.Decode has already validated every node the delta carries.
func (s *state) apply(in *interner, d *netmap.Delta) error {
	if d.From != s.version || d.To <= d.From {
		return fmt.Errorf("%w: delta %d->%d, map at %d", netmap.ErrVersionMismatch, d.From, d.To, s.version)
	}
	if d.Self != nil {
		s.self = in.intern(d.Self)
	}
	for _, id := range d.PeersRemoved {
		i, ok := s.find(in, id)
		if !ok {
			return fmt.Errorf("%w: removing unknown peer %d", netmap.ErrInconsistent, id)
		}
		s.online -= b2i(in.get(s.peers[i]).Online)
		s.peers = slices.Delete(s.peers, i, i+1)
	}
	for j := range d.PeersChanged {
		c := &d.PeersChanged[j]
		i, ok := s.find(in, c.ID)
		if !ok {
			return fmt.Errorf("%w: changing unknown peer %d", netmap.ErrInconsistent, c.ID)
		}
		old := in.get(s.peers[i])
		n := old.Clone()
		c.Apply(&n)
		s.online += b2i(n.Online) - b2i(old.Online)
		s.peers[i] = in.intern(&n)
	}
	for j := range d.PeersAdded {
		n := &d.PeersAdded[j]
		i, ok := s.find(in, n.ID)
		if ok {
			return fmt.Errorf("%w: adding existing peer %d", netmap.ErrInconsistent, n.ID)
		}
		s.peers = slices.Insert(s.peers, i, in.intern(n))
		s.online += b2i(n.Online)
	}
	s.version = d.To
	return nil
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// simNode is one simulated node: a map stream over a real noiseconn
// session that decodes (proto.Read validates) and applies every message.
type simNode struct {
	b    *bench
	idx  int
	key  noise.PrivateKey
	port uint16 // current endpoint port

	mu   sync.Mutex
	conn *noiseconn.Conn
	id   uint64 // from the first full map
}

// dialRaw opens a session.
func (n *simNode) dialRaw(ctx context.Context) (*noiseconn.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return noiseconn.Dial(ctx, n.b.urlFor(n.idx), n.b.serverKey, n.key)
}

// dial opens a session and sends the MapRequest.
func (n *simNode) dial(ctx context.Context) (*noiseconn.Conn, error) {
	conn, err := n.dialRaw(ctx)
	if err != nil {
		return nil, err
	}
	ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n.idx >> 16), byte(n.idx >> 8), byte(n.idx)}), n.port)
	if err := proto.Write(conn, &proto.Message{MapRequest: &proto.MapRequest{Endpoints: []netip.AddrPort{ep}}}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// run keeps the stream until ctx ends, reconnecting (and counting it) when
// the server drops it. gotFull is called once, at the first full map.
func (n *simNode) run(ctx context.Context, conn *noiseconn.Conn, gotFull func()) {
	first, dialNow := true, conn == nil
	for ctx.Err() == nil {
		if conn == nil {
			if !dialNow {
				time.Sleep(100*time.Millisecond + rand.N(400*time.Millisecond))
			}
			dialNow = false
			var err error
			if conn, err = n.dial(ctx); err != nil {
				continue
			}
		}
		n.mu.Lock()
		n.conn = conn
		n.mu.Unlock()
		// The function may still run after stop returns (when ctx ended
		// first), by which time conn is nil: it closes its own copy.
		cur := conn
		stop := context.AfterFunc(ctx, func() { cur.Close() })
		err := n.stream(conn, func() {
			if first {
				first = false
				gotFull()
			}
		})
		stop()
		conn.Close()
		conn = nil
		if ctx.Err() == nil {
			n.b.cnt.reconnects.Add(1)
			if !errors.Is(err, io.EOF) {
				n.b.logf("node %d: stream: %v; reconnecting", n.idx, err)
			}
		}
	}
}

func (n *simNode) stream(conn *noiseconn.Conn, gotFull func()) error {
	cr := &countReader{r: conn}
	var s state
	b := n.b
	for {
		m, err := proto.Read(cr, proto.MaxClientMessage)
		if err != nil {
			return err
		}
		now := time.Now()
		b.cnt.msgs.Add(1)
		b.cnt.bytes.Add(cr.n)
		cr.n = 0
		if m.Error != nil {
			return m.Error
		}
		r := m.MapResponse
		if r == nil {
			return fmt.Errorf("%w: unexpected message on the map stream", proto.ErrMalformed)
		}
		c := b.cur.Load()
		switch {
		case r.KeepAlive:
			b.cnt.keepalives.Add(1)
			continue
		case r.Full != nil:
			b.cnt.full.Add(1)
			s.setFull(b.in, r.Full)
			n.mu.Lock()
			n.id = b.in.get(s.self).ID
			n.mu.Unlock()
			gotFull()
			if c != nil && c.matchMap(b.in, &s) {
				c.deliver(n.idx, now)
			}
		case !s.full:
			return fmt.Errorf("%w: delta before the full map", proto.ErrMalformed)
		default:
			b.cnt.deltas.Add(1)
			if err := s.apply(b.in, r.Delta); err != nil {
				b.cnt.errors.Add(1)
				return err
			}
			if c != nil && c.matchDelta(r.Delta) {
				c.deliver(n.idx, now)
			}
		}
		if s.online == b.nodes-1 {
			b.markConverged(n.idx)
		}
	}
}

// send writes a message on the node's current stream.
func (n *simNode) send(m *proto.Message) error {
	n.mu.Lock()
	conn := n.conn
	n.mu.Unlock()
	if conn == nil {
		return errors.New("not connected")
	}
	return proto.Write(conn, m)
}
