// Package client is the node side of Warren's control protocol: it
// registers the node with a pre-auth key and keeps the map stream alive,
// applying deltas to its network map, persisting the last good map so the
// node keeps working while the server is unreachable, and reconnecting with
// capped, jittered exponential backoff.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// Config configures a Client.
type Config struct {
	// ServerURL is the coordination server's base URL (http or https), or
	// several replicas' URLs separated by commas (docs/HA.md): the client
	// keeps to the one that answered last and tries the next in turn when
	// it does not.
	ServerURL string
	// ServerKey is the server's static public key, pinned on first join.
	ServerKey pubkey.Server
	// NodeKey is the node's private key; its public half is the node's
	// identity and WireGuard key.
	NodeKey noise.PrivateKey
	// DiscoKey, if not zero, is the node's path-probe public key, reported
	// on every map stream for the server to give to the node's peers.
	DiscoKey pubkey.Disco
	// MapPath, if set, is where the last good network map is saved and
	// loaded from at the start of Run.
	MapPath string
	// MinBackoff and MaxBackoff bound the reconnect delay; defaults 1 s and
	// 30 s. Each failure doubles the delay up to MaxBackoff; the actual wait
	// is jittered to between half and all of it.
	MinBackoff, MaxBackoff time.Duration
	// Clock times the reconnect waits; nil is the real clock (tests pass
	// a clock.Fake).
	Clock clock.Clock
	// ReadTimeout drops a stream on which nothing (not even a keepalive)
	// arrived for this long; default 2 minutes.
	ReadTimeout time.Duration
	// Logger gets the client's events, each at its own level: a stream
	// that ended and is retried at info, or at warning when the server
	// refused it; a saved map that cannot be read or written at warning.
	// nil discards.
	Logger *slog.Logger
	// Control, if set, is called on each TCP socket to the server before
	// it connects (net.Dialer.Control).
	Control func(network, address string, c syscall.RawConn) error
	// Routes are the routes the node advertises, reported on every map
	// stream (SetRoutes changes them).
	Routes []netip.Prefix
	// OS and Version are reported on every map stream, for admins to see
	// (runtime.GOOS and Warren's version); empty: not reported.
	OS, Version string
	// RelayPort is the UDP port the node offers to serve as a peer relay
	// on (0: none), reported on every map stream.
	RelayPort uint16
}

// Client is a node's control client. Its methods are safe for concurrent
// use; run at most one Run at a time.
type Client struct {
	cfg Config

	mu        sync.Mutex
	endpoints []netip.AddrPort
	routes    []netip.Prefix
	conn      *noiseconn.Conn // current stream, if any
	noResume  bool            // the last resume failed: ask for a full map
	urls      []string        // cfg.ServerURL split
	cur       int             // index in urls of the replica that answered last
	nm        *netmap.NetworkMap
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.ServerURL == "" {
		return nil, errors.New("control client: no server URL")
	}
	if cfg.ServerKey.IsZero() {
		return nil, errors.New("control client: no server key")
	}
	if cfg.NodeKey.IsZero() {
		return nil, errors.New("control client: no node key")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Clock = clock.Or(cfg.Clock)
	var urls []string
	for u := range strings.SplitSeq(cfg.ServerURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return nil, errors.New("control client: no server URL")
	}
	return &Client{cfg: cfg, routes: slices.Clone(cfg.Routes), urls: urls}, nil
}

// refusal reports whether a map stream's error is the server (or something
// posing as it) refusing this node, as opposed to the network or the
// server going away: a refusal is logged as a warning, since retrying
// helps only if someone fixes the cause.
func refusal(err error) bool {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe.Code != proto.CodeInternal && pe.Code != proto.CodeUnavailable
	}
	return errors.Is(err, noiseconn.ErrRefused) || errors.Is(err, noiseconn.ErrHandshake) ||
		errors.Is(err, noiseconn.ErrVersionMismatch) || errors.Is(err, noiseconn.ErrNotAuthorized)
}

// RegisterError is a registration the server refused.
type RegisterError struct {
	Code    string // a proto.Code* constant
	Message string
	// AuthURL and RegistrationID come with proto.CodeLoginRequired and
	// proto.CodeApprovalRequired (RegisterInteractive).
	AuthURL, RegistrationID string
}

func (e *RegisterError) Error() string { return e.Message }

// dial opens an authenticated session, failing if ctx ends.
// With several server URLs it tries each in turn, from the one that
// answered last, each for at most replicaDialTimeout.
func (c *Client) dial(ctx context.Context) (*noiseconn.Conn, error) {
	c.mu.Lock()
	start, urls := c.cur, c.urls
	c.mu.Unlock()
	var firstErr error
	for i := range urls {
		at := (start + i) % len(urls)
		dctx, cancel := ctx, context.CancelFunc(func() {})
		if len(urls) > 1 {
			dctx, cancel = context.WithTimeout(ctx, replicaDialTimeout)
		}
		conn, err := noiseconn.DialWith(dctx, noiseconn.DialOptions{Control: c.cfg.Control}, urls[at], c.cfg.ServerKey.PublicKey, c.cfg.NodeKey)
		cancel()
		if err == nil {
			c.mu.Lock()
			if c.cur != at {
				c.cfg.Logger.Info("control: connected to another server replica", "url", urls[at])
			}
			c.cur = at
			c.mu.Unlock()
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// maxDigest bounds the digest of a held map sent to resume from it (the
// whole request must stay under proto.MaxFirstMessage once in base64).
const maxDigest = (proto.MaxFirstMessage - 64<<10) / 4 * 3

// replicaDialTimeout bounds one attempt to reach one of several replicas.
const replicaDialTimeout = 5 * time.Second

// closeOnDone closes conn when ctx ends, until the returned stop is called.
func closeOnDone(ctx context.Context, conn *noiseconn.Conn) (stop func() bool) {
	return context.AfterFunc(ctx, func() { conn.Close() })
}

// Register joins this node with a pre-auth key and returns the node as the
// server stored it (its name and addresses). Registering an already
// registered key again returns the existing node. A refusal is a
// *RegisterError.
func (c *Client) Register(ctx context.Context, authKey, hostname string, endpoints []netip.AddrPort) (*netmap.Node, error) {
	return c.register(ctx, &proto.RegisterRequest{AuthKey: authKey, Hostname: hostname, Endpoints: endpoints})
}

// RegisterInteractive joins this node by a person signing in. With regID
// "" it starts (forceReauth: even if the node is registered, for a
// re-login); the answer is then a *RegisterError with Code
// proto.CodeLoginRequired, the AuthURL to show and the RegistrationID to
// continue with. Continuing (regID set) waits a while on the server and
// returns the node once the person signed in, or the same error again
// (not yet), or proto.CodeApprovalRequired.
func (c *Client) RegisterInteractive(ctx context.Context, hostname string, endpoints []netip.AddrPort, forceReauth bool, regID string) (*netmap.Node, error) {
	return c.register(ctx, &proto.RegisterRequest{Interactive: true, ForceReauth: forceReauth, RegistrationID: regID,
		Hostname: hostname, Endpoints: endpoints})
}

func (c *Client) register(ctx context.Context, req *proto.RegisterRequest) (n *netmap.Node, err error) {
	err = c.retryUnavailable(ctx, func() error {
		n, err = c.registerOnce(ctx, req)
		return err
	})
	return n, err
}

func (c *Client) registerOnce(ctx context.Context, req *proto.RegisterRequest) (*netmap.Node, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	defer conn.Close()
	defer closeOnDone(ctx, conn)()
	if err := proto.Write(conn, &proto.Message{RegisterRequest: req}); err != nil {
		return nil, fmt.Errorf("register: %w", ctxErr(ctx, err))
	}
	m, err := proto.Read(conn, proto.MaxClientMessage)
	if err != nil {
		return nil, fmt.Errorf("register: %w", ctxErr(ctx, err))
	}
	switch r := m.RegisterResponse; {
	case m.Error != nil:
		return nil, &RegisterError{Code: m.Error.Code, Message: m.Error.Message}
	case r == nil:
		return nil, fmt.Errorf("register: %w: unexpected reply", proto.ErrMalformed)
	case r.Error != "":
		return nil, &RegisterError{Code: r.Code, Message: r.Error, AuthURL: r.AuthURL, RegistrationID: r.RegistrationID}
	case r.Node == nil:
		return nil, fmt.Errorf("register: %w: reply without node", proto.ErrMalformed)
	}
	if n := m.RegisterResponse.Node; n.Key.PublicKey != c.cfg.NodeKey.PublicKey() {
		return nil, fmt.Errorf("register: server returned a node with another key")
	}
	c.mu.Lock()
	c.endpoints = slices.Clone(req.Endpoints)
	c.mu.Unlock()
	return m.RegisterResponse.Node, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// SetEndpoints records the node's endpoints and reports them on the current
// stream, if any; later streams report them when they open.
func (c *Client) SetEndpoints(eps []netip.AddrPort) error {
	c.mu.Lock()
	c.endpoints = slices.Clone(eps)
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return proto.Write(conn, &proto.Message{EndpointUpdate: &proto.EndpointUpdate{Endpoints: eps}})
}

// SetRoutes records the routes the node advertises and reports them on
// the current stream, if any; later streams report them when they open.
func (c *Client) SetRoutes(routes []netip.Prefix) error {
	c.mu.Lock()
	c.routes = slices.Clone(routes)
	eps := slices.Clone(c.endpoints)
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	rs := nonNilRoutes(routes)
	return proto.Write(conn, &proto.Message{EndpointUpdate: &proto.EndpointUpdate{Endpoints: eps, Routes: &rs}})
}

// SetWireGuard reports on the current stream what this node, as their
// gateway, sees of its WireGuard-only members (docs/WIREGUARD.md). It
// returns ErrNotConnected when no stream is open; the caller reports again
// later.
func (c *Client) SetWireGuard(reports []proto.WireGuardReport) error {
	c.mu.Lock()
	eps := slices.Clone(c.endpoints)
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return ErrNotConnected
	}
	rs := slices.Clone(reports)
	if rs == nil {
		rs = []proto.WireGuardReport{}
	}
	return proto.Write(conn, &proto.Message{EndpointUpdate: &proto.EndpointUpdate{Endpoints: eps, WireGuard: &rs}})
}

// ErrNotConnected is returned by SetWireGuard while no map stream is open.
var ErrNotConnected = errors.New("control: no map stream open")

// SetRelayPort records the UDP port the node offers to serve as a peer
// relay on (0: none) and reports it on the current stream, if any.
func (c *Client) SetRelayPort(port uint16) error {
	c.mu.Lock()
	c.cfg.RelayPort = port
	eps := slices.Clone(c.endpoints)
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return proto.Write(conn, &proto.Message{EndpointUpdate: &proto.EndpointUpdate{Endpoints: eps, RelayPort: &port}})
}

func nonNilRoutes(rs []netip.Prefix) []netip.Prefix {
	if rs == nil {
		return []netip.Prefix{}
	}
	return slices.Clone(rs)
}

// Connected reports whether a map stream is open and has delivered its
// full map.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// NetworkMap returns the current map (nil before the first), which the
// caller must not modify.
func (c *Client) NetworkMap() *netmap.NetworkMap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nm
}

// Run keeps the map stream alive until ctx ends, calling onMap with each
// new map (never concurrently). It first loads the map saved at MapPath,
// if any, and hands it to onMap, so the node works while the server is
// unreachable. It returns ctx's error, or a refusal that retrying cannot
// fix (the node is not registered, expired or deleted, or its disco key is
// another node's) as *proto.Error.
func (c *Client) Run(ctx context.Context, onMap func(*netmap.NetworkMap)) error {
	if c.cfg.MapPath != "" {
		if m, err := netmap.Load(c.cfg.MapPath); err == nil {
			c.mu.Lock()
			c.nm = m
			c.mu.Unlock()
			onMap(m)
		} else if !errors.Is(err, os.ErrNotExist) {
			c.cfg.Logger.Warn("control: ignoring saved map", "path", c.cfg.MapPath, "err", err)
		}
	}
	var save func(*netmap.NetworkMap)
	if c.cfg.MapPath != "" {
		var stop func()
		save, stop = c.startSaver()
		defer stop()
	}
	backoff := c.cfg.MinBackoff
	for {
		gotMap, err := c.stream(ctx, onMap, save)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var pe *proto.Error
		if errors.As(err, &pe) && (pe.Code == proto.CodeNotRegistered || pe.Code == proto.CodeNodeDeleted || pe.Code == proto.CodeNodeExpired ||
			pe.Code == proto.CodeDiscoKeyInUse) {
			return pe
		}
		if gotMap {
			backoff = c.cfg.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		level := slog.LevelInfo
		if refusal(err) {
			level = slog.LevelWarn
		}
		c.cfg.Logger.Log(ctx, level, "control: map stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		if !c.sleep(ctx, wait) {
			return ctx.Err()
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
}

// stream runs one map stream; gotMap reports whether a full map arrived.
func (c *Client) stream(ctx context.Context, onMap, save func(*netmap.NetworkMap)) (gotMap bool, err error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	defer closeOnDone(ctx, conn)()

	c.mu.Lock()
	eps := slices.Clone(c.endpoints)
	routes := nonNilRoutes(c.routes)
	c.mu.Unlock()
	conn.SetWriteDeadline(time.Now().Add(c.cfg.ReadTimeout))
	c.mu.Lock()
	relayPort := c.cfg.RelayPort
	c.mu.Unlock()
	req := &proto.MapRequest{Endpoints: eps, Routes: &routes, OS: c.cfg.OS, Version: c.cfg.Version, RelayPort: &relayPort}
	if !c.cfg.DiscoKey.IsZero() {
		req.DiscoKey = &c.cfg.DiscoKey
	}
	// Resume from the map held, unless that failed last time.
	c.mu.Lock()
	held, resume := c.nm, !c.noResume
	c.noResume = false
	c.mu.Unlock()
	if held != nil && resume {
		if d, err := held.PeerDigest(); err == nil && len(d) <= maxDigest {
			req.Have = &proto.MapDigest{Version: held.Version, Peers: d}
		} else {
			held = nil
		}
	} else {
		held = nil
	}
	if err := proto.Write(conn, &proto.Message{MapRequest: req}); err != nil {
		return false, err
	}
	conn.SetWriteDeadline(time.Time{})
	defer func() {
		c.mu.Lock()
		if c.conn == conn {
			c.conn = nil
		}
		c.mu.Unlock()
	}()

	var cur *netmap.NetworkMap
	for {
		conn.SetReadDeadline(time.Now().Add(c.cfg.ReadTimeout))
		m, err := proto.Read(conn, proto.MaxClientMessage)
		if err != nil {
			return gotMap, err
		}
		if m.Error != nil {
			return gotMap, m.Error
		}
		r := m.MapResponse
		if r == nil {
			return gotMap, fmt.Errorf("%w: unexpected message on the map stream", proto.ErrMalformed)
		}
		switch {
		case r.KeepAlive:
			continue
		case r.Full != nil || (cur == nil && held != nil):
			if r.Full != nil {
				cur = r.Full
			} else { // the server resumed from the map held
				next, err := held.Apply(*r.Delta)
				if err != nil {
					c.mu.Lock()
					c.noResume = true // the next stream asks for a full map
					c.mu.Unlock()
					return gotMap, fmt.Errorf("apply resume delta: %w", err)
				}
				cur = next
			}
			if !gotMap {
				gotMap = true
				// Report endpoints set while the stream was opening.
				c.mu.Lock()
				c.conn = conn
				changed := !slices.Equal(eps, c.endpoints)
				eps = slices.Clone(c.endpoints)
				var rs *[]netip.Prefix
				if !slices.Equal(routes, nonNilRoutes(c.routes)) {
					routes = nonNilRoutes(c.routes)
					rs = &routes
				}
				// A relay port set after the request was built (SetRelayPort
				// found no stream to send it on) goes out now.
				var rp *uint16
				if c.cfg.RelayPort != relayPort {
					relayPort = c.cfg.RelayPort
					rp = &relayPort
				}
				c.mu.Unlock()
				if changed || rs != nil || rp != nil {
					if err := proto.Write(conn, &proto.Message{EndpointUpdate: &proto.EndpointUpdate{Endpoints: eps, Routes: rs, RelayPort: rp}}); err != nil {
						return gotMap, err
					}
				}
			}
		case cur == nil:
			return gotMap, fmt.Errorf("%w: delta before the full map", proto.ErrMalformed)
		default:
			next, err := cur.Apply(*r.Delta)
			if err != nil {
				return gotMap, fmt.Errorf("apply delta: %w", err)
			}
			cur = next
		}
		c.mu.Lock()
		c.nm = cur
		c.mu.Unlock()
		if save != nil {
			save(cur)
		}
		onMap(cur)
	}
}

// startSaver persists maps to MapPath off the stream's goroutine: save
// never blocks, and a map superseded while an earlier one is being written
// is skipped, so a burst of deltas costs one or two fsyncs, not one each.
// stop writes the latest map, if not yet written, and returns when done.
func (c *Client) startSaver() (save func(*netmap.NetworkMap), stop func()) {
	var mu sync.Mutex
	var pending *netmap.NetworkMap
	kick := make(chan struct{}, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	flush := func() {
		mu.Lock()
		m := pending
		pending = nil
		mu.Unlock()
		if m != nil {
			if err := netmap.Save(c.cfg.MapPath, m); err != nil {
				c.cfg.Logger.Warn("control: saving the map failed", "err", err)
			}
		}
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-kick:
				flush()
			case <-quit:
				flush()
				return
			}
		}
	}()
	save = func(m *netmap.NetworkMap) {
		mu.Lock()
		pending = m
		mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	stop = func() {
		close(quit)
		<-done
	}
	return save, stop
}

// Config returns the client's configuration (with defaults applied).
func (c *Client) Config() Config { return c.cfg }
