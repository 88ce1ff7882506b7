// Package server is Warren's coordination server: it speaks the control
// protocol (package proto) over noiseconn sessions, registers nodes in the
// store and keeps one map stream per connected node, sending each a full
// network map once and deltas afterwards.
//
// The server keeps one "world": every node of the deployment as a
// netmap.Node, sorted by ID. It follows the store through the store's
// change log (follow.go): every write, by this server or any other writer,
// logs what it touched, and one worker goroutine re-reads only that (a
// change to one node is one row read) and applies it to the world under
// the world lock, which is never held across store or network I/O. A
// handler that wrote waits for the worker to have applied its write
// where the answer depends on it (a full map, a registration). Either way
// the changed nodes' previous values are kept until the next
// fanout, which computes one netmap.Delta of the world and derives each
// stream's delta from it (the node's own entry dropped from the peer lists
// and turned into Self), so a change costs O(streams × size of the change)
// plus one row read, never a full map per node. A delta that is the same
// for every stream but its versions is encoded once; full maps are built
// from per-node encodings cached until the node changes. Fanouts are
// paced (a pause of 50 µs per stream after each), so a burst of changes,
// such as every node reconnecting at once, goes out as few deltas per
// stream rather than one per change. Each stream has a bounded queue
// drained by its own writer, which writes what is queued in one go; a
// stream whose queue overflows is dropped, and its node reconnects and
// takes a full map.
//
// A server alone (no Options.Replica) assumes it is the only one serving
// its store: at each pass of the worker, nodes the store says are online
// but that have no stream here are marked offline (a previous process's
// streams), and ephemeral nodes offline for longer than
// Options.EphemeralGrace are deleted. Replicas (replica.go) share the
// store: the online state names each node's replica, and the duties run
// on one replica at a time.
//
// Lock order (docs/ARCHITECTURE.md): a node's gate (lockNode), then s.mu;
// gateMu and syn.mu are leaves. s.mu is never held across store or
// network I/O; a node's gate is held across that node's own store writes.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// Options configure a Server. The zero value is valid.
type Options struct {
	// Domain is the deployment's DNS domain; default "warren.internal".
	Domain string
	// QueueSize bounds the messages waiting for one stream; default 256.
	QueueSize int
	// KeepAlive is how often an idle stream gets a keepalive; default 30 s.
	KeepAlive time.Duration
	// WriteTimeout bounds writing one message to a node; default 10 s.
	WriteTimeout time.Duration
	// RequestTimeout bounds waiting for a node's first request; default 30 s.
	RequestTimeout time.Duration
	// PollInterval is how often the store's change log is read even
	// without Notify, to pick up changes made by other processes (the
	// admin API in another server), and the ephemeral sweep runs; default
	// 10 s.
	PollInterval time.Duration
	// EphemeralGrace is how long an ephemeral node may stay offline (or
	// registered without ever connecting) before it is deleted; default 2
	// minutes.
	EphemeralGrace time.Duration
	// EndpointInterval is how often at most one node's endpoint reports
	// (EndpointUpdate) are written to the store and fanned out; reports
	// in between are merged, the latest winning; default 1 s.
	EndpointInterval time.Duration
	// TrafficInterval is how often at most a WireGuard-only member's
	// traffic, as its gateway reports it, changes in the maps (a delta to
	// every stream; traffic.go); default DefaultTrafficInterval.
	TrafficInterval time.Duration
	// Replica, if set, makes the server one of several replicas on one
	// PostgreSQL database (replica.go, docs/HA.md), named so in the
	// database; the store must be a ReplicaStore. Empty: the server is
	// alone with its store.
	Replica string
	// ReplicaHeartbeat is how often a replica refreshes its heartbeat and
	// checks its hold on the singleton duties; default 1 s.
	ReplicaHeartbeat time.Duration
	// ReplicaLapse is how old a replica's heartbeat may get before its
	// nodes are marked offline; default 5 s.
	ReplicaLapse time.Duration
	// ChangeKeep is how long replicas keep the change log; default 1 h.
	ChangeKeep time.Duration
	// AuditKeep is how long the audit log keeps an entry: older ones are
	// deleted once an hour, by the replica holding the duties (auditkeep.go);
	// 0 keeps every entry.
	AuditKeep time.Duration
	// Relays are the packet relays offered to every node (in their maps).
	// A replica offers the live replicas' relays (relays.go) before them.
	Relays []netmap.RelayRegion
	// ReplicaRelay is a replica's own embedded relay, which it registers
	// for every replica's maps (its ID and Code are ignored); nil: none.
	ReplicaRelay *netmap.RelayRegion
	// Interactive enables registration by signing in (interactive.go);
	// nil: nodes join with auth keys only.
	Interactive *Interactive
	// Clock is the server's time for what depends on it: node expiry
	// (checks and the timer refusing an expiring stream), the poll of the
	// store, the ephemeral sweep, keepalives, the endpoint interval and
	// online/last-seen times; nil is the real clock. Network deadlines
	// and the fanout's pacing always use the real clock.
	Clock clock.Clock
	// Logger gets the server's events at their levels: store and encoding
	// failures at error, refusals and dropped streams at warning, node
	// lifecycle (key rotation, logout, ephemeral deletion) at info; nil
	// discards.
	Logger *slog.Logger
}

// Domain returns the deployment's MagicDNS domain.
func (s *Server) Domain() string { return s.opts.Domain }

// DefaultDomain is the DNS domain when Options.Domain is empty.
const DefaultDomain = "warren.internal"

// Server is the coordination server. Create it with New, serve Handler,
// and Close it when done.
type Server struct {
	st   Store
	key  noise.PrivateKey
	opts Options
	log  *slog.Logger // opts.Logger
	clk  clock.Clock  // opts.Clock, or the real clock
	regs regWaiters   // nodes waiting for a sign-in (interactive.go)
	cb   *noiseconn.Server

	kick   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup // worker, handlers and writers
	closed bool           // under mu

	fol         follower  // the worker's position in the store's change log (follow.go)
	auditPruned time.Time // the worker's last pruning of the audit log (auditkeep.go)
	syn         syncState // handlers waiting for the worker (follow.go)

	gateMu sync.Mutex           // guards gates; taken alone
	gates  map[uint64]*nodeGate // per-node write gates (follow.go)

	mu       sync.Mutex
	world    *netmap.NetworkMap     // Peers = every node; Self unused
	nodes    map[uint64]*store.Node // every stored node as last read (never modified)
	sessions map[uint64]*session
	loaded   bool                         // world loaded from the store at least once
	conns    map[*noiseconn.Conn]struct{} // every open connection
	// dirty holds, for each node changed since the last fanout, its value
	// then (nil: not in the world); fanKick wakes the fanout goroutine.
	dirty   map[uint64]*netmap.Node
	fanKick chan struct{}
	enc     map[uint64][]byte // JSON of world nodes, for full maps
	encHash map[uint64]uint64 // netmap.HashNodeJSON of enc, for resumes
	// dns is the deployment's DNS configuration (custom records, zones,
	// split DNS), sent whole when it changes; dnsDirty marks a change not
	// yet fanned out.
	dns      netmap.DNSConfig
	dnsDirty bool
	// relays is the relay map in force (relays.go); relaysDirty marks a
	// change not yet fanned out.
	relays      []netmap.RelayRegion
	relaysDirty bool
	// pol is the access policy and each node's compiled filter (policy.go).
	pol policyState
	// traffic is when WireGuard-only members' traffic last changed in
	// the world and which changes are held (traffic.go).
	traffic trafficState

	stats serverStats  // stats.go
	rep   replicaState // replica.go
	// watchers are woken when a world node changes (watch.go).
	watchers map[chan struct{}]struct{}
}

// New returns a server on st with the server's static key, and starts its
// worker.
func New(st Store, key noise.PrivateKey, opts Options) *Server {
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 30 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 10 * time.Second
	}
	if opts.EphemeralGrace <= 0 {
		opts.EphemeralGrace = 2 * time.Minute
	}
	if opts.EndpointInterval <= 0 {
		opts.EndpointInterval = DefaultEndpointInterval
	}
	if opts.TrafficInterval <= 0 {
		opts.TrafficInterval = DefaultTrafficInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ReplicaHeartbeat <= 0 {
		opts.ReplicaHeartbeat = DefaultReplicaHeartbeat
	}
	if opts.ReplicaLapse <= 0 {
		opts.ReplicaLapse = DefaultReplicaLapse
	}
	if opts.ChangeKeep <= 0 {
		opts.ChangeKeep = DefaultChangeKeep
	}
	s := &Server{
		st: st, key: key, opts: opts, log: opts.Logger, clk: clock.Or(opts.Clock),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		world:    &netmap.NetworkMap{},
		nodes:    map[uint64]*store.Node{},
		gates:    map[uint64]*nodeGate{},
		sessions: map[uint64]*session{},
		conns:    map[*noiseconn.Conn]struct{}{},
		dirty:    map[uint64]*netmap.Node{},
		fanKick:  make(chan struct{}, 1),
		enc:      map[uint64][]byte{},
		encHash:  map[uint64]uint64{},
		relays:   opts.Relays,
	}
	s.syn.done = make(chan struct{})
	s.fol.users = map[int64]string{}
	s.cb = &noiseconn.Server{Key: key, Handle: s.handle}
	if opts.Replica != "" {
		s.startReplica()
	}
	s.wg.Add(2)
	go s.worker()
	go s.fanouter()
	return s
}

// PublicKey is the server's static public key, which nodes pin.
func (s *Server) PublicKey() pubkey.Server { return pubkey.Server{PublicKey: s.key.PublicKey()} }

// Handler serves the control protocol at noiseconn.Path and the server's
// public key at noiseconn.KeyPath (what a node pins on first join).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(noiseconn.Path, s.cb)
	mux.HandleFunc("GET "+noiseconn.KeyPath, s.serveKey)
	return mux
}

// serveKey answers GET noiseconn.KeyPath with the server's static public
// key as JSON. It is public information; a node trusts it only on first use
// (or when the operator passes it explicitly) and pins it afterwards.
func (s *Server) serveKey(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(noiseconn.KeyInfo{PublicKey: s.key.PublicKey().String(), Version: noiseconn.ProtocolVersion})
}

// Notify tells the server that the store changed (for example an admin
// deleted or renamed a node): the worker reads the change log at once and
// every stream gets its delta promptly.
func (s *Server) Notify() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close drops every stream, stops the worker and waits for all of the
// server's goroutines. Connections arriving later are closed at once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	for _, ss := range s.sessions {
		ss.kill()
	}
	conns := make([]*noiseconn.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns { // closing a TLS connection writes: not under s.mu
		c.Close()
	}
	s.wg.Wait()
	s.stopReplica()
	return nil
}

// track registers a connection's goroutine with the server unless it is
// closed; untrack undoes it.
func (s *Server) track(c *noiseconn.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *noiseconn.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) worker() {
	defer s.wg.Done()
	poll := clock.NewChanTimer(s.clk)
	poll.Reset(s.opts.PollInterval)
	defer poll.Stop()
	// expiry fires when the next node expiry passes, so that node's stream
	// is refused at that moment rather than at the next poll.
	expiry := clock.NewChanTimer(s.clk)
	expiry.Reset(time.Hour)
	defer expiry.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-poll.C:
			poll.Reset(s.opts.PollInterval)
		case <-expiry.C:
		}
		expiry.Reset(s.pass())
	}
}

// errorCode maps store errors to protocol codes and clear messages.
func errorCode(err error) (code, msg string) {
	switch {
	case errors.Is(err, store.ErrAuthKeyUsed):
		return proto.CodeAuthKeyUsed, "registration refused: this one-off auth key has already been used"
	case errors.Is(err, store.ErrAuthKeyExpired):
		return proto.CodeAuthKeyExpired, "registration refused: the auth key has expired"
	case errors.Is(err, store.ErrAuthKeyInvalid):
		return proto.CodeAuthKeyInvalid, "registration refused: unknown or invalid auth key"
	case errors.Is(err, store.ErrNodeKeyInUse):
		return proto.CodeNodeKeyInUse, "registration refused: this node key is registered to another user"
	case errors.Is(err, store.ErrAddressExhausted):
		return proto.CodeInternal, "registration refused: the deployment has no free addresses"
	case errors.Is(err, store.ErrInvalid):
		return proto.CodeBadRequest, "registration refused: invalid request"
	case store.IsUnavailable(err):
		return proto.CodeUnavailable, unavailableMsg
	}
	return proto.CodeInternal, "internal server error"
}

// unavailableMsg answers a request the store could not serve because the
// database is out of reach: in fixed words (the cause, which may name a
// host or a path, goes only to the log).
const unavailableMsg = "the control server cannot reach its database; try again shortly"

// failed logs a request that a store error ended and returns its answer:
// proto.CodeUnavailable when the database is out of reach (a condition
// that passes, logged as a warning), else proto.CodeInternal.
func (s *Server) failed(what string, key pubkey.Node, err error) (code, msg string) {
	if store.IsUnavailable(err) {
		s.log.Warn("control: "+what+" failed: the database is unreachable", "node", key, "err", err)
		return proto.CodeUnavailable, unavailableMsg
	}
	s.log.Error("control: "+what+" failed", "node", key, "err", err)
	return proto.CodeInternal, "internal server error"
}

func endpointStrings(eps []netip.AddrPort) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.String()
	}
	return out
}

// register joins the session's key (never one from the message).
func (s *Server) register(key pubkey.Node, req *proto.RegisterRequest) *proto.RegisterResponse {
	if err := proto.CheckEndpoints(req.Endpoints); err != nil {
		return &proto.RegisterResponse{Code: proto.CodeBadRequest, Error: "registration refused: " + err.Error()}
	}
	if len(req.Hostname) > proto.MaxHostname {
		return &proto.RegisterResponse{Code: proto.CodeBadRequest, Error: "registration refused: hostname too long"}
	}
	if strings.IndexFunc(req.Hostname, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		// Admins see host names in their terminals.
		return &proto.RegisterResponse{Code: proto.CodeBadRequest, Error: fmt.Sprintf("registration refused: hostname %s has control or other non-printable characters", strconv.Quote(req.Hostname))}
	}
	if req.Interactive && req.AuthKey == "" {
		return s.registerInteractive(key, req) // interactive.go
	}
	ctx, cancel := storeCtx()
	defer cancel()
	n, err := s.st.RegisterNode(ctx, req.AuthKey, key, req.Hostname, store.RegisterOptions{Endpoints: endpointStrings(req.Endpoints)})
	if err != nil {
		code, msg := errorCode(err)
		if code == proto.CodeInternal || code == proto.CodeUnavailable {
			s.failed("register", key, err) // logged; errorCode's answer stands (no free addresses, say)
		}
		return &proto.RegisterResponse{Code: code, Error: msg}
	}
	if err := s.sync(); err != nil { // the node is in the world before it is told it joined
		s.log.Error("control: register failed", "node", key, "err", err)
	}
	nn, ok := toNetmap(n, s.storedUserName(ctx, n.UserID))
	if !ok {
		return &proto.RegisterResponse{Code: proto.CodeInternal, Error: "internal server error"}
	}
	return &proto.RegisterResponse{Node: &nn}
}

// storedUserName reads a user's name for a handler's answer ("" if it
// cannot).
func (s *Server) storedUserName(ctx context.Context, id int64) string {
	u, err := s.st.GetUser(ctx, id)
	if err != nil {
		return ""
	}
	return u.Name
}

// handle serves one authenticated control connection.
func (s *Server) handle(c *noiseconn.Conn) {
	if !s.track(c) {
		return
	}
	defer s.untrack(c)
	key := pubkey.Node{PublicKey: c.Peer()} // the node key the session proved
	for {
		c.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout))
		m, err := proto.Read(c, proto.MaxFirstMessage)
		if err != nil {
			if errors.Is(err, proto.ErrMalformed) || errors.Is(err, proto.ErrTooLarge) || errors.Is(err, proto.ErrVersion) {
				s.writeError(c, proto.CodeBadRequest, err.Error())
			}
			return
		}
		switch {
		case m.RegisterRequest != nil:
			resp := s.register(key, m.RegisterRequest)
			c.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
			if err := proto.Write(c, &proto.Message{RegisterResponse: resp}); err != nil || resp.Error != "" {
				return
			}
		case m.MapRequest != nil:
			c.SetReadDeadline(time.Time{})
			s.stream(c, key, m.MapRequest)
			return
		case m.RotateKeyRequest != nil:
			resp := s.rotateKey(key, m.RotateKeyRequest)
			c.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
			proto.Write(c, &proto.Message{RotateKeyResponse: resp})
			return // the session's key is no longer the node's
		case m.LogoutRequest != nil:
			resp := s.logout(key)
			c.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
			proto.Write(c, &proto.Message{LogoutResponse: resp})
			return
		default:
			s.writeError(c, proto.CodeBadRequest, "expected registerRequest, mapRequest, rotateKeyRequest or logoutRequest")
			return
		}
	}
}

func (s *Server) writeError(c *noiseconn.Conn, code, msg string) {
	c.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	proto.Write(c, &proto.Message{Error: &proto.Error{Code: code, Message: msg}})
}
