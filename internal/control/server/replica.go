package server

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/store"
)

// Replicas (docs/HA.md): with Options.Replica set, the server is one of
// several on one PostgreSQL database. It differs from a server alone in
// four ways, all here:
//   - a node's online row names this replica (SetOnlineVia), and the end
//     of a stream writes the node offline only if it still names this
//     replica (the node may have moved to another meanwhile);
//   - a heartbeat goroutine refreshes this replica's row every
//     ReplicaHeartbeat; a node whose replica's heartbeat is older than
//     ReplicaLapse is marked offline by the duty holder;
//   - the singleton duties — marking lapsed replicas' nodes offline,
//     deleting ephemeral nodes, pruning the change log by age, pruning the
//     audit log (auditkeep.go) — run only
//     while this replica holds the duty lock (store.HoldDuties); a server
//     alone holds it always;
//   - the worker is woken by other replicas' changes (store.WatchChanges)
//     instead of only by its poll.

// ReplicaStore is what a replica uses of its store beyond Store:
// *store.Store.
type ReplicaStore interface {
	Store
	Heartbeat(ctx context.Context, replica string) error
	LeaveReplicas(ctx context.Context, replica string) error
	MarkLapsedOffline(ctx context.Context, lapse time.Duration) (int64, error)
	SetOnlineVia(ctx context.Context, id int64, replica string, lastSeen time.Time) error
	SetOfflineVia(ctx context.Context, id int64, replica string, lastSeen time.Time) error
	PruneChangesOlderThan(ctx context.Context, keep time.Duration) error
	DeleteOfflineNode(ctx context.Context, id int64) error
	WatchChanges(ctx context.Context, wake func(), retry time.Duration)
	HoldDuties(ctx context.Context, interval time.Duration, held func(bool))
}

var _ ReplicaStore = (*store.Store)(nil)

// Defaults of the replica options.
const (
	DefaultReplicaHeartbeat = time.Second
	DefaultReplicaLapse     = 5 * time.Second
	DefaultChangeKeep       = time.Hour
)

// replicaState is the replica half of a Server; zero when alone.
type replicaState struct {
	rs     ReplicaStore // nil: the server is alone
	duty   atomic.Bool  // this replica holds the singleton duties
	pruned time.Time    // last age prune (worker only)
	// relayRegistered: this replica's relay is in the store (heartbeat
	// goroutine only; cleared after a lapse, when it may have been removed).
	relayRegistered bool
	cancel          context.CancelFunc
	done            chan struct{}
}

// startReplica starts the replica's goroutines (New, with Options.Replica).
func (s *Server) startReplica() {
	rs, ok := s.st.(ReplicaStore)
	if !ok {
		panic("control: Options.Replica needs a ReplicaStore")
	}
	s.rep.rs = rs
	ctx, cancel := context.WithCancel(context.Background())
	s.rep.cancel, s.rep.done = cancel, make(chan struct{})
	hb := s.opts.ReplicaHeartbeat
	beat := func() error {
		c, cancel := context.WithTimeout(ctx, 2*hb)
		defer cancel()
		return rs.Heartbeat(c, s.opts.Replica)
	}
	if err := beat(); err != nil {
		s.log.Error("control: replica heartbeat failed", "err", err)
	} else {
		s.registerRelay(ctx)
	}
	go func() {
		defer close(s.rep.done)
		done := make(chan struct{}, 3)
		go func() { rs.WatchChanges(ctx, s.Notify, hb); done <- struct{}{} }()
		go func() {
			rs.HoldDuties(ctx, hb, func(held bool) {
				s.rep.duty.Store(held)
				if held {
					s.log.Info("control: this replica holds the singleton duties", "replica", s.opts.Replica)
					s.Notify()
				} else {
					s.log.Warn("control: this replica lost the singleton duties", "replica", s.opts.Replica)
				}
			})
			done <- struct{}{}
		}()
		go func() { s.heartbeats(ctx, beat); done <- struct{}{} }()
		for range 3 {
			<-done
		}
	}()
}

// heartbeats refreshes this replica's row and, while it holds the duties,
// marks lapsed replicas' nodes offline. After a lapse of its own (the
// database was out of reach), it writes its streams' nodes online again,
// since another replica may have marked them offline meanwhile.
func (s *Server) heartbeats(ctx context.Context, beat func() error) {
	t := time.NewTicker(s.opts.ReplicaHeartbeat)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := beat(); err != nil {
			s.log.Error("control: replica heartbeat failed", "err", err)
			continue
		}
		if time.Since(lastOK) > s.opts.ReplicaLapse/2 {
			s.rep.relayRegistered = false
			s.reassertOnline(ctx)
		}
		lastOK = time.Now()
		s.registerRelay(ctx) // relays.go
		if s.rep.duty.Load() {
			c, cancel := context.WithTimeout(ctx, s.opts.ReplicaLapse)
			n, err := s.rep.rs.MarkLapsedOffline(c, s.opts.ReplicaLapse)
			cancel()
			if err != nil {
				s.log.Error("control: marking lapsed replicas' nodes offline failed", "err", err)
			} else if n > 0 {
				s.log.Info("control: marked nodes of lapsed replicas offline", "nodes", n)
			}
		}
	}
}

// reassertOnline writes every node streaming here online again.
func (s *Server) reassertOnline(ctx context.Context) {
	s.mu.Lock()
	ids := make([]uint64, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		unlock := s.lockNode(id)
		s.mu.Lock()
		streaming := s.sessions[id] != nil
		s.mu.Unlock()
		if streaming {
			c, cancel := context.WithTimeout(ctx, s.opts.ReplicaLapse)
			if err := s.rep.rs.SetOnlineVia(c, int64(id), s.opts.Replica, s.clk.Now()); err != nil && !errors.Is(err, store.ErrNotFound) {
				s.log.Error("control: marking the node online again failed", "node", id, "err", err)
			}
			cancel()
		}
		unlock()
	}
	s.log.Info("control: replica heartbeat back after a lapse; streams' nodes marked online again", "nodes", len(ids))
}

// stopReplica stops the replica's goroutines and leaves the replicas
// table (Close, after every stream ended).
func (s *Server) stopReplica() {
	if s.rep.rs == nil {
		return
	}
	s.rep.cancel()
	<-s.rep.done
	ctx, cancel := storeCtx()
	defer cancel()
	if err := s.rep.rs.LeaveReplicas(ctx, s.opts.Replica); err != nil {
		s.log.Error("control: leaving the replicas failed", "err", err)
	}
}

// hasDuties reports whether this server runs the singleton duties: a
// server alone always does.
func (s *Server) hasDuties() bool { return s.rep.rs == nil || s.rep.duty.Load() }

// setOnline writes a node online (on this replica) or offline (if still on
// this replica).
func (s *Server) setOnline(ctx context.Context, id int64, online bool, lastSeen time.Time) error {
	switch {
	case s.rep.rs == nil:
		return s.st.SetOnline(ctx, id, online, lastSeen)
	case online:
		return s.rep.rs.SetOnlineVia(ctx, id, s.opts.Replica, lastSeen)
	default:
		return s.rep.rs.SetOfflineVia(ctx, id, s.opts.Replica, lastSeen)
	}
}

// deleteEphemeral deletes an ephemeral node the sweep found offline for
// too long; a replica deletes it only if it is still offline in the
// store (it may have come back through another replica). ErrNotFound:
// gone or back.
func (s *Server) deleteEphemeral(ctx context.Context, id int64) error {
	if s.rep.rs == nil {
		return s.st.DeleteNode(ctx, id)
	}
	return s.rep.rs.DeleteOfflineNode(ctx, id)
}

// pruneByAge is the replicas' pruning of the change log: by the duty
// holder, at most once a minute, what is older than ChangeKeep (so a
// replica less than that behind catches up from the log; one further
// behind reloads everything).
func (s *Server) pruneByAge(ctx context.Context) {
	if !s.rep.duty.Load() || time.Since(s.rep.pruned) < time.Minute {
		return
	}
	s.rep.pruned = time.Now()
	if err := s.rep.rs.PruneChangesOlderThan(ctx, s.opts.ChangeKeep); err != nil {
		s.log.Error("control: pruning the change log failed", "err", err)
	}
}

// HoldsDuties reports whether this server runs the singleton duties now
// (always, for a server alone).
func (s *Server) HoldsDuties() bool { return s.hasDuties() }
