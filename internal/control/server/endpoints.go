package server

import (
	"errors"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/store"
)

// DefaultEndpointInterval is Options.EndpointInterval's default.
const DefaultEndpointInterval = time.Second

// endpointApplier applies one stream's EndpointUpdates to the store and the
// world at most once per interval: the first at once, later ones merged
// (the latest endpoints, disco key and routes win) and applied when the
// interval since the previous has passed. So a node reporting endpoints in
// a tight loop costs at most one store write and one delta to every stream
// per interval, and what it reported last is never lost: close applies
// what is left.
type endpointApplier struct {
	s    *Server
	ss   *session
	node *store.Node

	mu      sync.Mutex
	pending *proto.EndpointUpdate // merged updates not yet applied
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func (s *Server) newEndpointApplier(ss *session, n *store.Node) *endpointApplier {
	a := &endpointApplier{s: s, ss: ss, node: n, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go a.loop()
	return a
}

// add queues an update, merged into any not yet applied.
func (a *endpointApplier) add(u *proto.EndpointUpdate) {
	a.s.stats.endpointUpdates.Add(1)
	a.mu.Lock()
	if p := a.pending; p != nil {
		a.s.stats.endpointsCoalesced.Add(1)
		p.Endpoints = u.Endpoints
		if u.DiscoKey != nil {
			p.DiscoKey = u.DiscoKey
		}
		if u.Routes != nil {
			p.Routes = u.Routes
		}
		if u.WireGuard != nil {
			p.WireGuard = u.WireGuard
		}
		if u.RelayPort != nil {
			p.RelayPort = u.RelayPort
		}
	} else {
		c := *u
		a.pending = &c
	}
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// close applies what is pending and stops the applier.
func (a *endpointApplier) close() {
	close(a.stop)
	<-a.done
}

func (a *endpointApplier) take() *proto.EndpointUpdate {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.pending
	a.pending = nil
	return u
}

func (a *endpointApplier) loop() {
	defer close(a.done)
	defer func() {
		if u := a.take(); u != nil {
			a.apply(u)
		}
	}()
	for {
		select {
		case <-a.stop:
			return
		case <-a.kick:
		}
		u := a.take()
		if u == nil {
			continue
		}
		a.apply(u)
		t := clock.NewChanTimer(a.s.clk)
		t.Reset(a.s.opts.EndpointInterval)
		select {
		case <-a.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// apply writes one (merged) update to the store, unless another stream
// of the node has replaced this one (its own reports are newer); the
// worker applies it to the world.
func (a *endpointApplier) apply(u *proto.EndpointUpdate) {
	s, id := a.s, a.node.ID
	unlock := s.lockNode(uint64(id))
	s.mu.Lock()
	current := s.sessions[uint64(id)] == a.ss
	s.mu.Unlock()
	if !current {
		unlock()
		return
	}
	s.stats.endpointWrites.Add(1)
	ctx, cancel := storeCtx()
	err := s.st.UpdateEndpoints(ctx, id, endpointStrings(u.Endpoints))
	conflict := false
	if err == nil && u.DiscoKey != nil {
		if err = s.st.SetDiscoKey(ctx, id, *u.DiscoKey); errors.Is(err, store.ErrConflict) {
			conflict = true
		}
	}
	if err == nil && u.Routes != nil {
		err = s.st.SetAdvertisedRoutes(ctx, id, *u.Routes)
	}
	if err == nil && u.WireGuard != nil {
		err = s.st.ReportWireGuard(ctx, id, wireGuardReports(*u.WireGuard, s.clk.Now()))
	}
	if err == nil && u.RelayPort != nil {
		err = s.st.SetRelayPort(ctx, id, *u.RelayPort)
	}
	cancel()
	unlock()
	s.Notify()
	switch {
	case conflict:
		s.log.Warn("control: endpoints refused: the disco key is another node's", "node", id)
		a.ss.refuseLocking(proto.CodeDiscoKeyInUse, discoKeyInUse)
	case err != nil:
		s.log.Error("control: endpoints update failed", "node", id, "err", err)
	}
}

// wireGuardReports converts a gateway's reports, received at now, for the
// store.
func wireGuardReports(rs []proto.WireGuardReport, now time.Time) []store.WireGuardReport {
	out := make([]store.WireGuardReport, 0, len(rs))
	for _, r := range rs {
		out = append(out, store.WireGuardReport{ID: int64(r.ID), Online: r.Online, LastHandshake: r.LastHandshake,
			RxBytes: int64(r.RxBytes), TxBytes: int64(r.TxBytes), At: now})
	}
	return out
}
