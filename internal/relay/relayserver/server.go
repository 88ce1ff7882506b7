// Package relayserver is the server side of Warren's packet relay (the
// protocol and the client are package relay): it forwards packets between
// the sessions of vouched node keys. Each client has a bounded queue
// towards it (the newest packet is dropped when full, so a slow receiver
// stalls only itself), at most MaxClientsPerKey sessions per key (the
// newest wins) and, when the operator asks for one (Options.Rate), a
// token-bucket limit on the bytes it sends: by default a relay does not
// throttle the nodes it serves. It owns the two
// ways a relay learns which nodes the coordination server vouches for: the
// store, when embedded in `warren server` (StoreAllowed), and the admin
// API, when standalone (AdminPoller).
package relayserver

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
)

// Defaults of Options. The keepalive and write timeout are the protocol's
// (package relay), which a client uses too.
const (
	// DefaultBurst is the bucket size of a rate limit set without one.
	DefaultBurst = 1 << 20
	// DefaultQueuePackets and DefaultQueueBytes bound the queue towards
	// one session: deep enough for a Gbit/s TCP flow's bursts (about
	// 10 ms of it), and 2 MiB of memory at most for a session that
	// does not keep up. An idle session's queue holds no memory.
	DefaultQueuePackets     = 1024
	DefaultQueueBytes       = 2 << 20
	DefaultMaxClientsPerKey = 1
	DefaultKeepAlive        = relay.DefaultKeepAlive
	DefaultWriteTimeout     = relay.DefaultWriteTimeout
	// peerGoneEvery is how often one sender hears that one destination is
	// absent.
	peerGoneEvery = time.Second
	// maxGoneTracked bounds a sender's table of recent notices.
	maxGoneTracked = 256
)

// Options configure a Server. Zero fields take the defaults.
type Options struct {
	// Key is the relay's static private key (embedded: the coordination
	// server's key).
	Key noise.PrivateKey
	// Allowed says whether the coordination server vouches for a node key.
	// It is asked when a node connects and again at every keepalive; it
	// must be fast (cache). Required.
	Allowed func(nodeKey pubkey.Node) bool
	// Rate is the sustained bytes per second one session may send; zero
	// or negative: no limit (the default: a relay does not throttle its
	// own users unless its operator asks). Burst is the bucket size
	// (DefaultBurst, at least MaxPacketSize); it matters only with a
	// Rate. Over the limit packets are dropped and counted.
	Rate, Burst int64
	// QueuePackets and QueueBytes bound the queue towards one session;
	// when either is full, new packets for it are dropped.
	QueuePackets int
	QueueBytes   int64
	// MaxClientsPerKey is how many sessions one node key may hold; a new
	// one closes the oldest. Packets go to the newest.
	MaxClientsPerKey int
	// KeepAlive is how often the relay sends a keepalive and re-checks
	// Allowed; a client silent for 2.5 times as long is dropped.
	KeepAlive time.Duration
	// WriteTimeout drops a client that does not take its data this long.
	WriteTimeout time.Duration
	// Logger gets sessions connecting and ending (info); nil discards.
	Logger *slog.Logger
	// Clock times the keepalives (and the re-checks of Allowed), the
	// refill of the rate limit and the peer-gone notices' spacing; nil
	// is the real clock. Socket deadlines (the idle and write timeouts)
	// always use the real clock: the kernel enforces them.
	Clock clock.Clock
}

// Stats are the relay's counters. Clients is a gauge; the rest count up.
type Stats struct {
	Clients            int64 // sessions connected now
	Accepted           int64 // sessions accepted
	Refused            int64 // node keys refused as not vouched for
	Replaced           int64 // sessions closed because a newer one of the key came
	PacketsIn, BytesIn int64 // packets (and their bytes) clients asked to send
	PacketsOut         int64 // packets written to receivers
	BytesOut           int64
	DropsNoPeer        int64 // destination not connected
	DropsQueueFull     int64 // receiver's queue full (slow receiver)
	DropsRateLimit     int64 // sender over its rate
	ClosedOversize     int64 // sessions closed for an oversized frame
	ClosedProtocol     int64 // sessions closed for a malformed frame
	ClosedNotVouched   int64 // sessions closed when vouching ended
	ClosedWriteTimeout int64 // sessions closed because they did not read
}

type counters struct {
	clients, accepted, refused, replaced, packetsIn, bytesIn, packetsOut, bytesOut,
	dropsNoPeer, dropsQueueFull, dropsRate, closedOversize, closedProtocol, closedNotVouched,
	closedWriteTimeout atomic.Int64
}

// Server is a relay: an http.Handler for Path.
type Server struct {
	o  Options
	cb noiseconn.Server

	mu      sync.RWMutex
	clients map[pubkey.Node][]*client // oldest first
	closed  bool
	c       counters
}

// NewServer returns a relay server; mount it at Path on an http.Server
// with ReadHeaderTimeout set.
func NewServer(o Options) (*Server, error) {
	if o.Key.IsZero() {
		return nil, errors.New("relay: no key")
	}
	if o.Allowed == nil {
		return nil, errors.New("relay: no Allowed function (who vouches for nodes?)")
	}
	o.Clock = clock.Or(o.Clock)
	if o.Rate <= 0 {
		o.Rate, o.Burst = 0, 0
	} else {
		if o.Burst <= 0 {
			o.Burst = DefaultBurst
		}
		o.Burst = max(o.Burst, relay.MaxPacketSize)
	}
	if o.QueuePackets <= 0 {
		o.QueuePackets = DefaultQueuePackets
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	o.QueueBytes = max(o.QueueBytes, relay.MaxPacketSize)
	if o.MaxClientsPerKey <= 0 {
		o.MaxClientsPerKey = DefaultMaxClientsPerKey
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, clients: map[pubkey.Node][]*client{}}
	s.cb = noiseconn.Server{Key: o.Key, Protocol: relay.RelayProtocol, Handle: s.handle, Authorize: s.authorize}
	return s, nil
}

// PublicKey is the key nodes pin for this relay.
func (s *Server) PublicKey() pubkey.Relay { return pubkey.Relay{PublicKey: s.o.Key.PublicKey()} }

// ServeHTTP upgrades the request to a relay session.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.cb.ServeHTTP(w, r) }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.c
	return Stats{Clients: c.clients.Load(), Accepted: c.accepted.Load(), Refused: c.refused.Load(),
		Replaced: c.replaced.Load(), PacketsIn: c.packetsIn.Load(), BytesIn: c.bytesIn.Load(),
		PacketsOut: c.packetsOut.Load(), BytesOut: c.bytesOut.Load(), DropsNoPeer: c.dropsNoPeer.Load(),
		DropsQueueFull: c.dropsQueueFull.Load(), DropsRateLimit: c.dropsRate.Load(),
		ClosedOversize: c.closedOversize.Load(), ClosedProtocol: c.closedProtocol.Load(),
		ClosedNotVouched: c.closedNotVouched.Load(), ClosedWriteTimeout: c.closedWriteTimeout.Load()}
}

// Close closes every session and refuses new ones. (http.Server.Shutdown
// does not see hijacked connections.)
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var all []*client
	for _, cs := range s.clients {
		all = append(all, cs...)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.closeWith(relay.ClosingShutdown)
	}
	return nil
}

// authorize vets the key a connecting node proved (noiseconn's peer, the
// node's key).
func (s *Server) authorize(peer noise.PublicKey) error {
	if !s.o.Allowed(pubkey.Node{PublicKey: peer}) {
		s.c.refused.Add(1)
		return errors.New("node key not known to the coordination server, or expired")
	}
	return nil
}

type client struct {
	s    *Server
	key  pubkey.Node
	conn *noiseconn.Conn
	// queue holds the frames waiting for the writer, oldest first (at
	// most QueuePackets); the writer takes all of them at once. Its
	// slices grow only while the session is busy.
	qmu   sync.Mutex
	queue []item
	// wake (capacity 1) tells the writer the queue is no longer empty.
	wake chan struct{}
	// qlen counts the payload bytes of every frame in queue, packets and
	// control frames (pongs, peer-gone notices) alike: enqueue adds them,
	// the writer subtracts them as it takes the frames off the queue.
	qlen atomic.Int64
	// closing carries a reason for the writer to send before closing.
	closing chan byte
	done    chan struct{}
	once    sync.Once
}

func (c *client) close() {
	c.once.Do(func() {
		close(c.done)
		c.conn.Close()
	})
}

// closeWith asks the writer to send a closing notice, then close; the
// writer's WriteTimeout bounds how long that may take.
func (c *client) closeWith(reason byte) {
	select {
	case c.closing <- reason:
	default:
	}
}

func (s *Server) register(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	cs := append(s.clients[c.key], c)
	for len(cs) > s.o.MaxClientsPerKey {
		old := cs[0]
		cs = cs[1:]
		s.c.replaced.Add(1)
		old.closeWith(relay.ClosingReplaced)
	}
	s.clients[c.key] = cs
	return true
}

func (s *Server) unregister(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.clients[c.key]
	for i, x := range cs {
		if x == c {
			cs = append(cs[:i:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(s.clients, c.key)
	} else {
		s.clients[c.key] = cs
	}
}

// lookup returns the newest session of k.
func (s *Server) lookup(k pubkey.Node) *client {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cs := s.clients[k]
	if len(cs) == 0 {
		return nil
	}
	return cs[len(cs)-1]
}

// handle runs one session: the writer in its own goroutine, the reader
// here.
func (s *Server) handle(conn *noiseconn.Conn) {
	c := &client{s: s, key: pubkey.Node{PublicKey: conn.Peer()}, conn: conn, wake: make(chan struct{}, 1),
		closing: make(chan byte, 1), done: make(chan struct{})}
	info := binary.BigEndian.AppendUint32(nil, uint32(s.o.KeepAlive/time.Second))
	info = binary.BigEndian.AppendUint64(info, uint64(s.o.Rate))
	info = binary.BigEndian.AppendUint64(info, uint64(s.o.Burst))
	c.enqueue(item{typ: relay.FrameInfo, data: info}) // first, before anyone can route to c
	if !s.register(c) {
		return
	}
	s.c.accepted.Add(1)
	s.c.clients.Add(1)
	s.o.Logger.Info("relay: node connected", "node", c.key, "from", conn.RemoteAddr())
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		c.writeLoop()
	}()
	err := c.readLoop()
	s.unregister(c)
	c.close()
	<-wdone
	s.c.clients.Add(-1)
	s.o.Logger.Info("relay: node disconnected", "node", c.key, "err", err)
}

func (c *client) readLoop() error {
	s := c.s
	buf := make([]byte, relay.InitialReadBuf)
	st := sendState{tokens: s.o.Burst, last: s.o.Clock.Now()}
	var extended time.Time
	for {
		// Push the idle deadline out at most once a second, not per frame
		// (each move is a timer update in the runtime).
		if now := time.Now(); now.Sub(extended) >= time.Second {
			extended = now
			c.conn.SetReadDeadline(now.Add(s.o.KeepAlive * 5 / 2))
		}
		typ, p, err := relay.ReadFrame(c.conn, &buf) // the session buffers a decrypted frame: no bufio
		if err != nil {
			if errors.Is(err, relay.ErrFrameTooLarge) {
				s.c.closedOversize.Add(1)
			}
			return err
		}
		switch typ {
		case relay.FrameSend:
			if err := c.handleSend(&st, p); err != nil {
				return err
			}
		case relay.FramePing:
			if len(p) != 8 {
				s.c.closedProtocol.Add(1)
				return errors.New("bad ping frame")
			}
			c.enqueue(item{typ: relay.FramePong, data: append([]byte(nil), p...)})
		default:
			// pong, keepalive from a client, or a later addition: skip.
		}
	}
}

func (c *client) writeLoop() {
	s := c.s
	defer c.close()
	bw := &batchWriter{w: c.conn}
	tick := clock.NewChanTimer(s.o.Clock)
	tick.Reset(s.o.KeepAlive)
	defer tick.Stop()
	defer c.drain()
	write := func(it item) error { return c.writeItem(bw, it) }
	var batch []item // the frames taken off the queue, reused
	fail := func(err error) {
		if isTimeout(err) {
			s.c.closedWriteTimeout.Add(1)
		}
	}
	for {
		select {
		case <-c.done:
			return
		case reason := <-c.closing:
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			write(item{typ: relay.FrameClosing, data: []byte{reason}})
			bw.Flush()
			return
		case <-tick.C:
			tick.Reset(s.o.KeepAlive)
			if !s.o.Allowed(c.key) {
				s.c.closedNotVouched.Add(1)
				c.closeWith(relay.ClosingNotVouched)
				continue
			}
			c.conn.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
			if err := write(item{typ: relay.FrameKeepAlive}); err != nil {
				fail(err)
				return
			}
			if err := bw.Flush(); err != nil {
				fail(err)
				return
			}
		case <-c.wake:
			// Write what is queued now, then flush once.
			batch = c.take(batch)
			if len(batch) == 0 {
				continue
			}
			c.conn.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
			var err error
			for i, it := range batch {
				if err == nil {
					err = write(it)
				} else {
					it.release()
				}
				batch[i] = item{}
			}
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				fail(err)
				return
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
