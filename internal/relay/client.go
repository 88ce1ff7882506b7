package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// ErrNotConnected is returned by Client.Send while no session is up.
var ErrNotConnected = errors.New("relay: not connected")

// ClientOptions configure a Client.
type ClientOptions struct {
	DialOptions
	// Receive is called with each packet relayed to this node, from the
	// client's single reader goroutine; pkt is valid only during the call
	// and Receive must not block for long.
	Receive func(src pubkey.Node, pkt []byte)
	// PeerGone is called when the relay says a destination is not
	// connected (at most once a second per destination), so the caller
	// can try another path. Same rules as Receive.
	PeerGone func(peer pubkey.Node)
	// OnState is called with true when a session comes up and false when
	// it goes down. Same rules as Receive.
	OnState func(connected bool)
	// MinBackoff and MaxBackoff bound the jittered exponential delay
	// between connection attempts (defaults 250ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// Clock times the waits between connection attempts (and whether a
	// session lasted long enough to reset the backoff) and the client's
	// pings; nil is the real clock. Socket deadlines and the round trip
	// Ping measures always use the real clock.
	Clock clock.Clock
	// Logger gets connection events: a session up at debug level (OnState
	// is the caller's), a failed attempt at info, or at warning when the
	// relay refused this node; nil discards.
	Logger *slog.Logger
}

// Client keeps a session to one relay up, reconnecting after failures.
type Client struct {
	url      string
	relayKey pubkey.Relay
	nodeKey  noise.PrivateKey
	o        ClientOptions

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	conn    *Conn
	up      chan struct{} // closed while connected; replaced when down
	pings   map[[8]byte]chan struct{}
	lastErr error

	batchMu   sync.Mutex
	batchKeys []noise.PublicKey // SendBatch's keys, reused
}

// NewClient starts a client for the relay at url with key relayKey,
// authenticating as nodeKey. It connects in the background; Close stops it.
func NewClient(url string, relayKey pubkey.Relay, nodeKey noise.PrivateKey, o ClientOptions) *Client {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Clock = clock.Or(o.Clock)
	c := &Client{url: url, relayKey: relayKey, nodeKey: nodeKey, o: o, done: make(chan struct{}),
		up: make(chan struct{}), pings: map[[8]byte]chan struct{}{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	return c
}

// Send relays pkt to the node dst over the current session. It fails with
// ErrNotConnected while reconnecting (the caller drops the packet, as it
// would on a lossy path).
func (c *Client) Send(dst pubkey.Node, pkt []byte) error {
	if len(pkt) > MaxPacketSize {
		return fmt.Errorf("relay: packet of %d bytes (at most %d)", len(pkt), MaxPacketSize)
	}
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return ErrNotConnected
	}
	if err := conn.Send(dst, pkt); err != nil {
		conn.Close() // the reader notices and reconnects
		return err
	}
	return nil
}

// SendBatch relays pkts[i] to the node dsts[i] with one write to the
// current session (see Conn.SendBatch); like Send, it fails with
// ErrNotConnected while reconnecting.
func (c *Client) SendBatch(dsts []pubkey.Node, pkts [][]byte) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return ErrNotConnected
	}
	c.batchMu.Lock()
	defer c.batchMu.Unlock()
	c.batchKeys = c.batchKeys[:0]
	for _, d := range dsts {
		c.batchKeys = append(c.batchKeys, d.PublicKey)
	}
	if err := conn.SendBatch(c.batchKeys, pkts); err != nil {
		conn.Close() // the reader notices and reconnects
		return err
	}
	return nil
}

// Connected reports whether a session is up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// WaitConnected waits until a session is up or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	up := c.up
	c.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		err := c.lastErr
		c.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		}
		return ctx.Err()
	case <-c.done:
		return errClosed
	}
}

// Ping measures the round trip to the relay over the current session.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	var id [8]byte
	rand.Read(id[:])
	ch := make(chan struct{})
	c.mu.Lock()
	conn := c.conn
	if conn != nil {
		c.pings[id] = ch
	}
	c.mu.Unlock()
	if conn == nil {
		return 0, ErrNotConnected
	}
	defer func() {
		c.mu.Lock()
		delete(c.pings, id)
		c.mu.Unlock()
	}()
	start := time.Now()
	if err := conn.Ping(id); err != nil {
		conn.Close()
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Close stops the client and closes its session.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

func (c *Client) run() {
	defer close(c.done)
	backoff := c.o.MinBackoff
	for c.ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
		conn, err := Dial(dctx, c.url, c.relayKey, c.nodeKey, c.o.DialOptions)
		cancel()
		if err == nil {
			start := c.o.Clock.Now()
			err = c.serve(conn)
			if c.o.Clock.Now().Sub(start) > 10*time.Second {
				backoff = c.o.MinBackoff // it worked for a while: retry soon
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		// Full jitter over the upper half: [backoff/2, backoff).
		d := backoff/2 + time.Duration(mrand.Int64N(int64(backoff/2)+1))
		level := slog.LevelInfo
		if refusal(err) {
			level = slog.LevelWarn
		}
		c.o.Logger.Log(c.ctx, level, "relay: session failed; retrying", "url", c.url, "err", err, "in", d.Round(time.Millisecond))
		backoff = min(2*backoff, c.o.MaxBackoff)
		t := clock.NewChanTimer(c.o.Clock)
		t.Reset(d)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return
		}
	}
}

// serve runs one session until it fails.
func (c *Client) serve(conn *Conn) error {
	ka := conn.Info().KeepAlive
	if ka <= 0 {
		ka = DefaultKeepAlive
	}
	c.mu.Lock()
	c.conn = conn
	close(c.up)
	c.mu.Unlock()
	c.o.Logger.Debug("relay: connected", "url", c.url)
	if c.o.OnState != nil {
		c.o.OnState(true)
	}
	stop := context.AfterFunc(c.ctx, func() { conn.Close() })
	// The client pings as often as the relay sends keepalives, so both
	// sides see traffic even when no packets flow.
	pingDone := make(chan struct{})
	go func() {
		t := clock.NewChanTimer(c.o.Clock)
		t.Reset(ka)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				t.Reset(ka)
				if conn.Ping([8]byte{}) != nil {
					conn.Close()
					return
				}
			case <-pingDone:
				return
			}
		}
	}()
	err := c.readLoop(conn, ka)
	close(pingDone)
	stop()
	conn.Close()
	c.mu.Lock()
	c.conn = nil
	c.up = make(chan struct{})
	c.mu.Unlock()
	if c.o.OnState != nil {
		c.o.OnState(false)
	}
	return err
}

func (c *Client) readLoop(conn *Conn, ka time.Duration) error {
	var extended time.Time
	for {
		// Push the idle deadline out at most once a second, not per
		// packet (each move is a timer update in the runtime).
		if now := time.Now(); now.Sub(extended) >= time.Second {
			extended = now
			conn.SetReadDeadline(now.Add(ka * 5 / 2))
		}
		m, err := conn.Recv()
		if err != nil {
			return err
		}
		switch m.Type {
		case MsgPacket:
			if c.o.Receive != nil {
				c.o.Receive(m.Peer, m.Data)
			}
		case MsgPeerGone:
			if c.o.PeerGone != nil {
				c.o.PeerGone(m.Peer)
			}
		case MsgPong:
			var id [8]byte
			copy(id[:], m.Data)
			c.mu.Lock()
			if ch, ok := c.pings[id]; ok {
				close(ch)
				delete(c.pings, id)
			}
			c.mu.Unlock()
		case MsgClosing:
			return fmt.Errorf("relay closed the session (%s)", closingReason(m.Reason))
		}
	}
}

func closingReason(r byte) string {
	switch r {
	case ClosingReplaced:
		return "replaced by a newer session of this node key"
	case ClosingNotVouched:
		return "node key no longer vouched for"
	case ClosingShutdown:
		return "relay shutting down"
	}
	return fmt.Sprintf("reason %d", r)
}

// refusal reports whether err is the relay (or something posing as it)
// refusing this node rather than a network failure: retrying will not help
// until someone changes a key or the server's node list.
func refusal(err error) bool {
	return errors.Is(err, ErrNotVouched) || errors.Is(err, noiseconn.ErrRefused) ||
		errors.Is(err, noiseconn.ErrVersionMismatch) || errors.Is(err, noiseconn.ErrHandshake)
}
