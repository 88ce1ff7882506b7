// Package server is Warren's coordination server: it speaks the control
// protocol (package proto) over controlbase sessions, registers nodes in the
// store and keeps one map stream per connected node, sending each a full
// network map once and deltas afterwards.
//
// The server keeps one "world": every node of the deployment as a
// netmap.Node, sorted by ID. A change this server makes itself (a node
// registers, connects, disconnects or reports endpoints) re-reads that one
// node and diffs its old and new entry; a change made elsewhere (Notify,
// or the periodic poll) reloads every node and diffs the old and new world.
// Either way one netmap.Delta of the world is computed and each stream's
// delta derived from it (the node's own entry dropped from the peer lists
// and turned into Self), so a change costs O(streams × size of the change)
// plus one row read, never a full map per node. Each stream has a bounded
// queue drained by its own writer; a stream whose queue overflows is
// dropped, and its node reconnects and takes a full map.
//
// The server assumes it is the only one serving its store: at each full
// reload, nodes the store says are online but that have no stream here are
// marked offline (a previous process's streams), and ephemeral nodes
// offline for longer than Options.EphemeralGrace are deleted.
package server

import (
	"cmp"
	"context"
	"errors"
	"log"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"warren/internal/control/controlbase"
	"warren/internal/control/proto"
	"warren/internal/netmap"
	"warren/internal/noise"
	"warren/internal/store"
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
	// PollInterval is how often the world is reloaded from the store even
	// without Notify, to pick up changes made by other processes (the admin
	// API in another server, expiry); default 10 s.
	PollInterval time.Duration
	// EphemeralGrace is how long an ephemeral node may stay offline (or
	// registered without ever connecting) before it is deleted; default 2
	// minutes.
	EphemeralGrace time.Duration
	// Logf logs; default log.Printf.
	Logf func(format string, args ...any)
}

// DefaultDomain is the DNS domain when Options.Domain is empty.
const DefaultDomain = "warren.internal"

// Server is the coordination server. Create it with New, serve Handler,
// and Close it when done.
type Server struct {
	st   *store.Store
	key  noise.PrivateKey
	opts Options
	cb   *controlbase.Server

	kick   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup // worker, handlers and writers
	closed bool           // under mu

	mu       sync.Mutex
	world    *netmap.NetworkMap // Peers = every node; Self unused
	users    map[int64]string
	sessions map[uint64]*session
	loaded   bool                           // world loaded from the store at least once
	conns    map[*controlbase.Conn]struct{} // every open connection
}

// New returns a server on st with the server's static key, and starts its
// worker.
func New(st *store.Store, key noise.PrivateKey, opts Options) *Server {
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
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	s := &Server{
		st: st, key: key, opts: opts,
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		world:    &netmap.NetworkMap{},
		users:    map[int64]string{},
		sessions: map[uint64]*session{},
		conns:    map[*controlbase.Conn]struct{}{},
	}
	s.cb = &controlbase.Server{Key: key, Handle: s.handle}
	s.wg.Add(1)
	go s.worker()
	return s
}

// PublicKey is the server's static public key, which nodes pin.
func (s *Server) PublicKey() noise.PublicKey { return s.key.PublicKey() }

// Handler serves the control protocol at controlbase.Path.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(controlbase.Path, s.cb)
	return mux
}

// Notify tells the server that the store changed (for example an admin
// deleted or renamed a node); every stream gets its delta promptly.
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
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// track registers a connection's goroutine with the server unless it is
// closed; untrack undoes it.
func (s *Server) track(c *controlbase.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *controlbase.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) worker() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-t.C:
		}
		s.mu.Lock()
		if err := s.refreshLocked(); err != nil {
			s.opts.Logf("control: reload nodes: %v", err)
		}
		s.mu.Unlock()
	}
}

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// userName returns a user's name, cached; s.mu held.
func (s *Server) userNameLocked(ctx context.Context, id int64) string {
	if n, ok := s.users[id]; ok {
		return n
	}
	u, err := s.st.GetUser(ctx, id)
	if err != nil {
		return ""
	}
	s.users[id] = u.Name
	return u.Name
}

// toNetmap converts a stored node; ok is false for a node that cannot be
// represented (a malformed key), which is left out of every map.
func toNetmap(n *store.Node, user string) (netmap.Node, bool) {
	key, err := noise.ParsePublicKey(n.NodeKey)
	if err != nil || key.IsZero() || !netmap.IsDNSLabel(n.Name) {
		return netmap.Node{}, false
	}
	var addrs []netip.Prefix
	for _, a := range []netip.Addr{n.IPv4, n.IPv6} {
		if a.IsValid() {
			addrs = append(addrs, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	var eps []netip.AddrPort
	for _, e := range n.Endpoints {
		if ap, err := netip.ParseAddrPort(e); err == nil && ap.Port() != 0 {
			eps = append(eps, ap)
		}
	}
	return netmap.Node{
		ID: uint64(n.ID), Name: n.Name, User: user, Key: key,
		Addresses: addrs, AllowedIPs: addrs, Endpoints: eps,
		Online: n.Online, LastSeen: n.LastSeen, Expiry: n.Expiry,
	}, true
}

// refreshLocked reloads the world and queues each stream's delta; s.mu held.
func (s *Server) refreshLocked() error {
	ctx, cancel := storeCtx()
	defer cancel()
	nodes, err := s.st.ListNodes(ctx, 0)
	if err != nil {
		return err
	}
	nw := &netmap.NetworkMap{Peers: make([]netmap.Node, 0, len(nodes))}
	now := time.Now()
	for _, n := range nodes {
		if !s.sweepLocked(ctx, n, now) {
			continue
		}
		if nn, ok := toNetmap(n, s.userNameLocked(ctx, n.UserID)); ok {
			nw.Peers = append(nw.Peers, nn)
		}
	}
	d := netmap.Diff(s.world, nw)
	s.world = nw
	s.loaded = true
	s.fanoutLocked(d)
	return nil
}

// updateNodeLocked re-reads one node after this server changed it and
// fans out the change, without reloading every node. s.mu held.
func (s *Server) updateNodeLocked(id int64) error {
	if !s.loaded {
		return s.refreshLocked()
	}
	ctx, cancel := storeCtx()
	defer cancel()
	n, err := s.st.GetNode(ctx, id)
	var next []netmap.Node
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		nn, ok := toNetmap(n, s.userNameLocked(ctx, n.UserID))
		if ok {
			next = []netmap.Node{nn}
		}
	}
	old := &netmap.NetworkMap{}
	i, found := slices.BinarySearchFunc(s.world.Peers, uint64(id), func(n netmap.Node, id uint64) int { return cmp.Compare(n.ID, id) })
	if found {
		old.Peers = []netmap.Node{s.world.Peers[i]}
	}
	d := netmap.Diff(old, &netmap.NetworkMap{Peers: next})
	if d.IsEmpty() {
		return nil
	}
	switch {
	case found && next == nil:
		s.world.Peers = slices.Delete(s.world.Peers, i, i+1)
	case found:
		s.world.Peers[i] = next[0]
	case next != nil:
		s.world.Peers = slices.Insert(s.world.Peers, i, next[0])
	}
	s.fanoutLocked(d)
	return nil
}

// fanoutLocked queues each stream's share of a world delta; s.mu held and
// s.world already the new world.
func (s *Server) fanoutLocked(d netmap.Delta) {
	if d.IsEmpty() {
		return
	}
	nw := s.world
	removed := make(map[uint64]bool, len(d.PeersRemoved))
	for _, id := range d.PeersRemoved {
		removed[id] = true
	}
	for id, ss := range s.sessions {
		if ss.isDead() || ss.version == 0 { // dead, or its full map is not built yet
			continue
		}
		if removed[id] {
			ss.refuse(proto.CodeNodeDeleted, "this node was deleted from the deployment")
			continue
		}
		nd := netmap.Delta{From: ss.version, To: ss.version + 1}
		for i := range d.PeersAdded {
			if d.PeersAdded[i].ID == id {
				nd.Self = &d.PeersAdded[i]
			} else {
				nd.PeersAdded = append(nd.PeersAdded, d.PeersAdded[i])
			}
		}
		for _, r := range d.PeersRemoved {
			nd.PeersRemoved = append(nd.PeersRemoved, r)
		}
		for i := range d.PeersChanged {
			if d.PeersChanged[i].ID == id {
				if self, ok := nw.Peer(id); ok {
					nd.Self = self
				}
			} else {
				nd.PeersChanged = append(nd.PeersChanged, d.PeersChanged[i])
			}
		}
		if nd.IsEmpty() {
			continue
		}
		ss.version++
		ss.send(&proto.Message{MapResponse: &proto.MapResponse{Delta: &nd}})
	}
}

// sweepLocked corrects a stored node that has no stream: it is marked
// offline if the store says online (a stream of a previous server process),
// and an ephemeral node offline for longer than EphemeralGrace is deleted.
// It reports whether the node stays in the world. s.mu held.
func (s *Server) sweepLocked(ctx context.Context, n *store.Node, now time.Time) bool {
	if s.sessions[uint64(n.ID)] != nil {
		return true
	}
	if n.Online {
		if err := s.st.SetOnline(ctx, n.ID, false, n.LastSeen); err != nil {
			s.opts.Logf("control: mark node %d offline: %v", n.ID, err)
		} else {
			n.Online = false
		}
	}
	if !n.Ephemeral || n.Online {
		return true
	}
	since := n.LastSeen
	if since.IsZero() || n.Created.After(since) {
		since = n.Created
	}
	if now.Sub(since) < s.opts.EphemeralGrace {
		return true
	}
	if err := s.st.DeleteNode(ctx, n.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.opts.Logf("control: delete ephemeral node %d: %v", n.ID, err)
		return true
	}
	s.opts.Logf("control: deleted ephemeral node %d (%s), offline since %v", n.ID, n.Name, since.Format(time.RFC3339))
	return false
}

// fullMapLocked builds node id's full map from the world; s.mu held.
func (s *Server) fullMapLocked(id uint64, version uint64) (*netmap.NetworkMap, bool) {
	m := &netmap.NetworkMap{Version: version, Domain: s.opts.Domain, Peers: make([]netmap.Node, 0, len(s.world.Peers))}
	found := false
	for i := range s.world.Peers {
		if s.world.Peers[i].ID == id {
			m.Self = s.world.Peers[i]
			found = true
		} else {
			m.Peers = append(m.Peers, s.world.Peers[i])
		}
	}
	return m, found
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
	}
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
func (s *Server) register(key noise.PublicKey, req *proto.RegisterRequest) *proto.RegisterResponse {
	if err := proto.CheckEndpoints(req.Endpoints); err != nil {
		return &proto.RegisterResponse{Code: proto.CodeBadRequest, Error: "registration refused: " + err.Error()}
	}
	if len(req.Hostname) > proto.MaxHostname {
		return &proto.RegisterResponse{Code: proto.CodeBadRequest, Error: "registration refused: hostname too long"}
	}
	ctx, cancel := storeCtx()
	defer cancel()
	n, err := s.st.RegisterNode(ctx, req.AuthKey, key.String(), req.Hostname, store.RegisterOptions{Endpoints: endpointStrings(req.Endpoints)})
	if err != nil {
		code, msg := errorCode(err)
		if code == proto.CodeInternal {
			s.opts.Logf("control: register %s: %v", key, err)
		}
		return &proto.RegisterResponse{Code: code, Error: msg}
	}
	s.mu.Lock()
	nn, ok := toNetmap(n, s.userNameLocked(ctx, n.UserID))
	if err := s.updateNodeLocked(n.ID); err != nil {
		s.opts.Logf("control: register %s: %v", key, err)
		s.Notify()
	}
	s.mu.Unlock()
	if !ok {
		return &proto.RegisterResponse{Code: proto.CodeInternal, Error: "internal server error"}
	}
	return &proto.RegisterResponse{Node: &nn}
}

// handle serves one authenticated control connection.
func (s *Server) handle(c *controlbase.Conn) {
	if !s.track(c) {
		return
	}
	defer s.untrack(c)
	key := c.Peer()
	for {
		c.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout))
		m, err := proto.Read(c, proto.MaxServerMessage)
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
		default:
			s.writeError(c, proto.CodeBadRequest, "expected registerRequest or mapRequest")
			return
		}
	}
}

func (s *Server) writeError(c *controlbase.Conn, code, msg string) {
	c.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	proto.Write(c, &proto.Message{Error: &proto.Error{Code: code, Message: msg}})
}

// stream runs a node's map stream until it ends.
func (s *Server) stream(c *controlbase.Conn, key noise.PublicKey, req *proto.MapRequest) {
	if err := proto.CheckEndpoints(req.Endpoints); err != nil {
		s.writeError(c, proto.CodeBadRequest, err.Error())
		return
	}
	ctx, cancel := storeCtx()
	n, err := s.st.GetNodeByKey(ctx, key.String())
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.writeError(c, proto.CodeNotRegistered, "this node key is not registered; register with an auth key first")
		return
	case err != nil:
		s.opts.Logf("control: map request from %s: %v", key, err)
		s.writeError(c, proto.CodeInternal, "internal server error")
		return
	case !n.Expiry.IsZero() && time.Now().After(n.Expiry):
		s.writeError(c, proto.CodeNodeExpired, "this node's key has expired; re-register")
		return
	}
	id := uint64(n.ID)
	ss := &session{s: s, id: id, c: c, q: make(chan []byte, s.opts.QueueSize), done: make(chan struct{})}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if old := s.sessions[id]; old != nil {
		old.kill() // one stream per node: the newest wins
	}
	s.sessions[id] = ss // version 0: refreshes skip it until its full map is queued
	ctx, cancel = storeCtx()
	err = s.st.SetOnline(ctx, n.ID, true, time.Now())
	if err == nil && req.Endpoints != nil {
		err = s.st.UpdateEndpoints(ctx, n.ID, endpointStrings(req.Endpoints))
	}
	cancel()
	if err == nil {
		err = s.updateNodeLocked(n.ID)
	}
	full, found := s.fullMapLocked(id, 1)
	if err != nil || !found {
		delete(s.sessions, id)
		s.mu.Unlock()
		if err != nil {
			s.opts.Logf("control: map request from %s: %v", key, err)
			s.writeError(c, proto.CodeInternal, "internal server error")
		} else {
			s.writeError(c, proto.CodeNodeDeleted, "this node was deleted from the deployment")
		}
		return
	}
	ss.version = 1
	ss.send(&proto.Message{MapResponse: &proto.MapResponse{Full: full}})
	s.wg.Add(1)
	s.mu.Unlock()

	go ss.writeLoop()
	refused := false
	for {
		m, err := proto.Read(c, proto.MaxServerMessage)
		if err != nil {
			if errors.Is(err, proto.ErrMalformed) || errors.Is(err, proto.ErrTooLarge) || errors.Is(err, proto.ErrVersion) {
				ss.refuseLocking(proto.CodeBadRequest, err.Error())
				refused = true
			}
			break
		}
		if m.EndpointUpdate == nil {
			ss.refuseLocking(proto.CodeBadRequest, "expected endpointUpdate on the map stream")
			refused = true
			break
		}
		if err := proto.CheckEndpoints(m.EndpointUpdate.Endpoints); err != nil {
			ss.refuseLocking(proto.CodeBadRequest, err.Error())
			refused = true
			break
		}
		ctx, cancel := storeCtx()
		err = s.st.UpdateEndpoints(ctx, n.ID, endpointStrings(m.EndpointUpdate.Endpoints))
		cancel()
		if err == nil {
			s.mu.Lock()
			err = s.updateNodeLocked(n.ID)
			s.mu.Unlock()
		}
		if err != nil {
			s.opts.Logf("control: endpoints of node %d: %v", id, err)
			s.Notify()
		}
	}
	if refused { // give the queued refusal a moment to be written
		select {
		case <-ss.done:
		case <-time.After(s.opts.WriteTimeout):
		}
	}
	ss.kill()
	<-ss.writerDone()

	s.mu.Lock()
	if s.sessions[id] == ss {
		delete(s.sessions, id)
		ctx, cancel := storeCtx()
		if err := s.st.SetOnline(ctx, n.ID, false, time.Now()); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.opts.Logf("control: node %d offline: %v", id, err)
		}
		cancel()
		if err := s.updateNodeLocked(n.ID); err != nil {
			s.opts.Logf("control: node %d offline: %v", id, err)
			s.Notify()
		}
		if n.Ephemeral {
			time.AfterFunc(s.opts.EphemeralGrace+10*time.Millisecond, s.Notify)
		}
	}
	s.mu.Unlock()
}

// session is one node's map stream.
type session struct {
	s       *Server
	id      uint64
	c       *controlbase.Conn
	version uint64 // last version queued; under s.mu
	q       chan []byte

	once      sync.Once
	done      chan struct{} // closed by kill
	wdoneOnce sync.Once
	wdone     chan struct{}
}

func (ss *session) writerDone() chan struct{} {
	ss.wdoneOnce.Do(func() { ss.wdone = make(chan struct{}) })
	return ss.wdone
}

func (ss *session) isDead() bool {
	select {
	case <-ss.done:
		return true
	default:
		return false
	}
}

// kill ends the stream: the writer stops and the connection closes.
func (ss *session) kill() {
	ss.once.Do(func() {
		close(ss.done)
		ss.c.Close()
	})
}

// send queues m without blocking; when the queue is full the stream is
// dropped, so the node reconnects and takes a full map. s.mu held.
func (ss *session) send(m *proto.Message) {
	b, err := proto.Encode(m)
	if err != nil {
		ss.s.opts.Logf("control: encode for node %d: %v", ss.id, err)
		ss.kill()
		return
	}
	select {
	case ss.q <- b:
	default:
		ss.s.opts.Logf("control: node %d is too slow (%d messages queued); dropping its stream", ss.id, len(ss.q))
		ss.kill()
	}
}

func (ss *session) refuseLocking(code, msg string) {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.refuse(code, msg)
}

// refuse queues an error and marks the stream for closing after it.
func (ss *session) refuse(code, msg string) {
	b, err := proto.Encode(&proto.Message{Error: &proto.Error{Code: code, Message: msg}})
	if err == nil {
		select {
		case ss.q <- b:
		default:
		}
	}
	select {
	case ss.q <- nil: // sentinel: close after what is queued
	default:
		ss.kill()
	}
}

func (ss *session) writeLoop() {
	defer ss.s.wg.Done()
	defer close(ss.writerDone())
	t := time.NewTicker(ss.s.opts.KeepAlive)
	defer t.Stop()
	ka, _ := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{KeepAlive: true}})
	write := func(b []byte) bool {
		ss.c.SetWriteDeadline(time.Now().Add(ss.s.opts.WriteTimeout))
		if _, err := ss.c.Write(b); err != nil {
			ss.kill()
			return false
		}
		return true
	}
	for {
		select {
		case <-ss.done:
			return
		case b := <-ss.q:
			if b == nil {
				ss.kill()
				return
			}
			if !write(b) {
				return
			}
			t.Reset(ss.s.opts.KeepAlive)
		case <-t.C:
			if !write(ka) {
				return
			}
		}
	}
}
