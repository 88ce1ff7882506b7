package server

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/routeprefix"
	"github.com/warrenmesh/warren/internal/store"
)

// stream runs a node's map stream until it ends.
func (s *Server) stream(c *noiseconn.Conn, key pubkey.Node, req *proto.MapRequest) {
	if err := proto.CheckEndpoints(req.Endpoints); err != nil {
		s.writeError(c, proto.CodeBadRequest, err.Error())
		return
	}
	if req.Routes != nil {
		if err := proto.CheckRoutes(*req.Routes); err != nil {
			s.writeError(c, proto.CodeBadRequest, err.Error())
			return
		}
	}
	ctx, cancel := storeCtx()
	n, err := s.st.GetNodeByKey(ctx, key)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.writeError(c, proto.CodeNotRegistered, "this node key is not registered; register with an auth key first")
		return
	case err != nil:
		code, msg := s.failed("map request", key, err)
		s.writeError(c, code, msg)
		return
	case n.Via != 0:
		// A WireGuard-only member's key: its gateway speaks for it.
		s.writeError(c, proto.CodeNotRegistered, wireGuardOnlyKey)
		return
	case !n.Expiry.IsZero() && s.clk.Now().After(n.Expiry):
		s.writeError(c, proto.CodeNodeExpired, "this node's key has expired; re-register")
		return
	}
	if req.DiscoKey != nil && *req.DiscoKey != n.DiscoKey {
		ctx, cancel := storeCtx()
		err := s.st.SetDiscoKey(ctx, n.ID, *req.DiscoKey)
		cancel()
		switch {
		case errors.Is(err, store.ErrConflict):
			s.log.Warn("control: map request refused: the disco key is another node's", "node", key)
			s.writeError(c, proto.CodeDiscoKeyInUse, discoKeyInUse)
			return
		case err != nil:
			code, msg := s.failed("map request", key, err)
			s.writeError(c, code, msg)
			return
		}
	}
	id := uint64(n.ID)
	ss := &session{s: s, id: id, c: c, q: make(chan []byte, s.opts.QueueSize), done: make(chan struct{})}

	// The stream takes the node's place (one stream per node: the newest
	// wins) and writes the node online under the node's gate, so that the
	// end of the stream it replaces cannot write it offline after; then it
	// waits for the world to show the write and builds the full map.
	unlockNode := s.lockNode(id)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		unlockNode()
		return
	}
	if old := s.sessions[id]; old != nil {
		old.kill()
	}
	s.sessions[id] = ss // version 0: fanouts skip it until its full map is queued
	s.mu.Unlock()
	ctx, cancel = storeCtx()
	err = s.setOnline(ctx, n.ID, true, s.clk.Now())
	if err == nil && req.Endpoints != nil {
		err = s.st.UpdateEndpoints(ctx, n.ID, endpointStrings(req.Endpoints))
	}
	if err == nil && req.Routes != nil && !routesEqual(*req.Routes, n.AdvertisedRoutes) {
		err = s.st.SetAdvertisedRoutes(ctx, n.ID, *req.Routes)
	}
	if err == nil && (req.OS != "" || req.Version != "") {
		// Shown to admins only: a value the store refuses is the node's
		// problem, not the stream's.
		if herr := s.st.SetHostinfo(ctx, n.ID, store.Hostinfo{OS: req.OS, Version: req.Version, Updated: s.clk.Now()}); herr != nil {
			if errors.Is(herr, store.ErrInvalid) {
				s.log.Warn("control: node reported invalid hostinfo", "node", key, "err", herr)
			} else {
				err = herr
			}
		}
	}
	if err == nil && req.RelayPort != nil && *req.RelayPort != n.RelayPort {
		err = s.st.SetRelayPort(ctx, n.ID, *req.RelayPort)
	}
	cancel()
	unlockNode()
	if err == nil {
		err = s.sync()
	}
	var full []byte
	found := false
	s.mu.Lock()
	if s.sessions[id] != ss || s.closed { // replaced by a newer stream meanwhile, or closing
		s.mu.Unlock()
		return
	}
	version := uint64(1)
	resumed := false
	if err == nil && req.Have != nil {
		full, found, resumed, err = s.encodeResumeLocked(id, req.Have)
		if resumed {
			version = req.Have.Version + 1
		}
	}
	if err == nil && !resumed && (req.Have == nil || found) {
		full, found, err = s.encodeFullLocked(id, 1)
	}
	if err != nil || !found {
		delete(s.sessions, id)
		s.mu.Unlock()
		if err != nil {
			s.log.Error("control: map request failed", "node", key, "err", err)
			s.writeError(c, proto.CodeInternal, "internal server error")
		} else {
			s.writeError(c, proto.CodeNodeDeleted, "this node was deleted from the deployment")
		}
		return
	}
	ss.version = version
	ss.filter = s.filterLocked(id) // what the full map carried
	ss.base = s.snapshotDirtyLocked()
	ss.sendBytes(full)
	if resumed {
		s.stats.resumes.Add(1)
	} else {
		s.stats.fullMaps.Add(1)
	}
	s.wg.Add(1)
	s.mu.Unlock()

	go ss.writeLoop()
	eps := s.newEndpointApplier(ss, n)
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
		if rs := m.EndpointUpdate.Routes; rs != nil {
			if err := proto.CheckRoutes(*rs); err != nil {
				ss.refuseLocking(proto.CodeBadRequest, err.Error())
				refused = true
				break
			}
		}
		if ws := m.EndpointUpdate.WireGuard; ws != nil {
			if err := proto.CheckWireGuardReports(*ws); err != nil {
				ss.refuseLocking(proto.CodeBadRequest, err.Error())
				refused = true
				break
			}
		}
		eps.add(m.EndpointUpdate)
	}
	if refused { // give the queued refusal a moment to be written
		select {
		case <-ss.done:
		case <-time.After(s.opts.WriteTimeout):
		}
	}
	ss.kill()
	<-ss.writerDone()
	eps.close() // what the node reported last is stored before it goes offline

	unlockNode = s.lockNode(id)
	s.mu.Lock()
	mine := s.sessions[id] == ss
	if mine {
		delete(s.sessions, id)
	}
	s.mu.Unlock()
	if mine {
		ctx, cancel := storeCtx()
		if err := s.setOnline(ctx, n.ID, false, s.clk.Now()); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("control: marking the node offline failed", "node", id, "err", err)
		}
		cancel()
	}
	unlockNode()
	if mine {
		s.Notify()
		if n.Ephemeral {
			s.clk.NewTimer(s.Notify).Reset(s.opts.EphemeralGrace + 10*time.Millisecond)
		}
	}
}

// session is one node's map stream.
type session struct {
	s       *Server
	id      uint64
	c       *noiseconn.Conn
	version uint64 // last version queued; under s.mu
	// base is, when the full map was built after the last fanout, the
	// value it had of each node changed since (see fanoutLocked); s.mu.
	base map[uint64]*netmap.Node
	// filter is the packet filter this stream's node was last sent; s.mu.
	filter []byte
	q      chan []byte

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

// kill ends the stream: the writer stops and closes the connection (not
// the caller, which may hold s.mu: closing a TLS connection writes).
func (ss *session) kill() {
	ss.once.Do(func() { close(ss.done) })
}

// send queues m without blocking; when the queue is full the stream is
// dropped, so the node reconnects and takes a full map. s.mu held.
func (ss *session) send(m *proto.Message) {
	b, err := proto.Encode(m)
	if err != nil {
		ss.s.log.Error("control: encoding a message failed", "node", ss.id, "err", err)
		ss.kill()
		return
	}
	ss.sendBytes(b)
}

// sendBytes is send for an encoded message. s.mu held.
func (ss *session) sendBytes(b []byte) {
	select {
	case ss.q <- b:
	default:
		ss.s.log.Warn("control: node is too slow; dropping its stream", "node", ss.id, "queued", len(ss.q))
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
	defer ss.c.Close()
	t := clock.NewChanTimer(ss.s.clk)
	t.Reset(ss.s.opts.KeepAlive)
	defer t.Stop()
	ka, _ := proto.Encode(&proto.Message{MapResponse: &proto.MapResponse{KeepAlive: true}})
	write := func(b []byte) bool {
		start := time.Now()
		ss.c.SetWriteDeadline(start.Add(ss.s.opts.WriteTimeout))
		_, err := ss.c.Write(b)
		ss.s.stats.streamWrite.since(start)
		if err != nil {
			ss.kill()
			return false
		}
		return true
	}
	// Small messages already queued are written together, in one frame.
	var batch []byte
	var next []byte // taken from the queue, not yet written
	for {
		b := next
		next = nil
		if b == nil {
			select {
			case <-ss.done:
				return
			case b = <-ss.q:
			case <-t.C:
				t.Reset(ss.s.opts.KeepAlive)
				if !write(ka) {
					return
				}
				continue
			}
		}
		if b == nil {
			ss.kill()
			return
		}
		end := false
		if len(b) < noiseconn.MaxPlaintext {
			batch = append(batch[:0], b...)
		drain:
			for {
				select {
				case nb := <-ss.q:
					if nb == nil {
						end = true
						break drain
					}
					if len(batch)+len(nb) > noiseconn.MaxPlaintext {
						next = nb
						break drain
					}
					batch = append(batch, nb...)
				default:
					break drain
				}
			}
			b = batch
		}
		if !write(b) {
			return
		}
		if end {
			ss.kill()
			return
		}
		t.Reset(ss.s.opts.KeepAlive)
	}
}

// discoKeyInUse is the refusal of a disco key another node holds.
const discoKeyInUse = "this disco key is already held by another node; each node must generate its own (restart the daemon)"

// discoString stores a disco key; the zero key (no probing) as "".
// routesEqual compares advertised routes as sets.
func routesEqual(a, b []netip.Prefix) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	routeprefix.Sort(a)
	routeprefix.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
