package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/policy"
	"github.com/warrenmesh/warren/internal/store"
)

// The server follows the store through its change log (store.Changes):
// every write to what maps are made of, by this server or anyone else,
// appends a change naming what it touched, and the worker goroutine reads
// the changes after the last it applied, re-reads only what they name (one
// query for the changed nodes) and applies that to the world. So a change
// to one node costs O(1) store reads and an O(peers) update of the world,
// however many nodes there are; the world is read whole only at start and
// when the follower fell behind a pruning of the log.
//
// The world lock (s.mu) is never held across store I/O: the worker reads
// first and then takes the lock to apply what it read. Because one
// goroutine reads and applies, in order, the world never goes back to an
// older value of a node. A handler that wrote to the store and needs the
// world to show it (a stream's full map must include its own node online)
// waits for a pass that started after its write (sync).
//
// Writes to one node's row by this server are ordered with the node's
// stream by the node's gate (lockNode): the stream that replaces another,
// the end of a stream, its endpoint reports and the sweep each take the
// node's gate, check under s.mu that the node's stream is still the one
// they act for, write, and release the gate. The gate is held across
// that node's writes only; it never blocks the world, another node or a
// reader, and s.mu is never held while taking it.

const (
	// changeBatch is how many changes one pass reads at most.
	changeBatch = 5000
	// holeWait is how long a missing sequence number (a PostgreSQL
	// transaction that took it and has not committed) is waited for
	// before it is taken for rolled back: longer than any store write's
	// timeout.
	holeWait = time.Minute
	// fullLoadWindow is how far before the last sequence number a full
	// load checks for changes still in flight (PostgreSQL).
	fullLoadWindow = 1000
	// followRetry is how soon a pass that failed to read the store is
	// tried again.
	followRetry = 500 * time.Millisecond
	// pruneKeep is how many changes the log keeps; pruneEvery how many
	// more it may grow by before the server prunes it.
	pruneKeep  = 10000
	pruneEvery = 10000
)

// follower is the worker's position in the change log; only the worker
// goroutine touches it.
type follower struct {
	loaded bool
	cursor int64               // every change up to cursor is applied
	holes  map[int64]time.Time // missing numbers above cursor, when first missed
	pruned int64               // the log was last pruned up to here
	users  map[int64]string    // user names by ID
}

// advance moves the cursor over rows, the changes read after it: up to
// the lowest number still missing, or the last read.
func (f *follower) advance(rows []store.Change, now time.Time) {
	if len(rows) == 0 {
		return
	}
	if f.holes == nil {
		f.holes = map[int64]time.Time{}
	}
	next := f.cursor + 1
	present := make(map[int64]bool, len(rows))
	for _, c := range rows {
		present[c.Seq] = true
		for ; next < c.Seq; next++ {
			if _, ok := f.holes[next]; !ok {
				f.holes[next] = now
			}
		}
		next = c.Seq + 1
	}
	cursor := rows[len(rows)-1].Seq
	for seq, since := range f.holes {
		if present[seq] || now.Sub(since) > holeWait {
			delete(f.holes, seq)
			continue
		}
		cursor = min(cursor, seq-1)
	}
	f.cursor = max(f.cursor, cursor)
}

// syncState lets a handler wait for a pass of the worker that started
// after its store write.
type syncState struct {
	mu        sync.Mutex
	requested uint64
	completed uint64
	err       error         // of the last pass
	done      chan struct{} // closed at the end of each pass
}

// sync waits until the world shows every store write made before the
// call: a pass of the worker that started after it has applied the log.
func (s *Server) sync() error {
	s.syn.mu.Lock()
	s.syn.requested++
	want := s.syn.requested
	s.syn.mu.Unlock()
	s.Notify()
	for {
		s.syn.mu.Lock()
		if s.syn.completed >= want {
			err := s.syn.err
			s.syn.mu.Unlock()
			return err
		}
		ch := s.syn.done
		s.syn.mu.Unlock()
		select {
		case <-ch:
		case <-s.stop:
			return errors.New("control: server closed")
		}
	}
}

// pass is one round of the worker: apply the store's changes to the world,
// sweep, refuse expired nodes' streams, put held traffic counters whose
// time has come into the world (traffic.go); it returns how long until
// the next node expiry or held counters' time.
func (s *Server) pass() time.Duration {
	s.syn.mu.Lock()
	target := s.syn.requested
	s.syn.mu.Unlock()
	start := time.Now()
	err := s.follow()
	s.stats.storeRead.since(start)
	if err != nil {
		s.log.Error("control: reading the store's changes failed", "err", err)
		// Try again soon rather than at the next poll or wake-up: the
		// store may be back (a restarted PostgreSQL leaves dead pooled
		// connections that fail one query each).
		time.AfterFunc(followRetry, s.Notify)
	}
	s.syn.mu.Lock()
	s.syn.completed, s.syn.err = target, err
	close(s.syn.done)
	s.syn.done = make(chan struct{})
	s.syn.mu.Unlock()

	s.sweep()
	s.pruneAudit()
	s.mu.Lock()
	s.refuseExpiredLocked()
	next := min(s.nextExpiryLocked(), s.publishTrafficLocked())
	s.mu.Unlock()
	return next
}

// follow applies the changes logged since the last pass (everything, the
// first time).
func (s *Server) follow() error {
	ctx, cancel := storeCtx()
	defer cancel()
	f := &s.fol
	if !f.loaded {
		return s.loadAll(ctx)
	}
	rows, pruned, err := s.st.Changes(ctx, f.cursor, changeBatch)
	if err != nil {
		return err
	}
	if pruned > f.cursor {
		s.log.Warn("control: the store's change log was pruned past this server's position; reloading everything")
		return s.loadAll(ctx)
	}
	if len(rows) == 0 {
		return nil
	}
	var nodeIDs, renamed []int64
	seen := map[int64]bool{}
	dns, pol, relays := false, false, false
	for _, c := range rows {
		switch c.Kind {
		case store.ChangeNode:
			if !seen[c.Ref] {
				seen[c.Ref] = true
				nodeIDs = append(nodeIDs, c.Ref)
			}
		case store.ChangeUser:
			renamed = append(renamed, c.Ref)
		case store.ChangeDNS:
			dns = true
		case store.ChangePolicy:
			pol = true
		case store.ChangeRelays:
			relays = true
		}
	}
	nodes, err := s.st.GetNodes(ctx, nodeIDs)
	if err != nil {
		return err
	}
	for _, id := range renamed {
		delete(f.users, id)
	}
	for _, id := range renamed {
		if err := s.userName(ctx, id); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if err := s.userName(ctx, n.UserID); err != nil {
			return err
		}
	}
	var ds *dnsUpdate
	if dns {
		if ds, err = s.readDNS(ctx); err != nil {
			return err
		}
	}
	var pu *policyUpdate
	if pol {
		if pu, err = s.readPolicy(ctx); err != nil {
			return err
		}
	}

	var rs *[]netmap.RelayRegion
	if relays {
		if rs, err = s.readRelays(ctx); err != nil {
			return err
		}
	}

	byID := make(map[int64]*store.Node, len(nodes))
	for _, n := range nodes {
		byID[n.ID] = n
	}
	s.mu.Lock()
	if ds != nil {
		s.setDNSLocked(ds.cfg)
	}
	if pu != nil {
		s.setPolicyLocked(pu)
	}
	if rs != nil {
		s.setRelaysLocked(*rs)
	}
	for _, id := range nodeIDs {
		n := byID[id]
		user := ""
		if n != nil {
			user = f.users[n.UserID]
		}
		s.applyNodeLocked(uint64(id), n, user)
	}
	if len(renamed) > 0 {
		// A user's new name is in each of their nodes.
		for id, n := range s.nodes {
			if slicesContains(renamed, n.UserID) && !seen[int64(id)] {
				s.applyNodeLocked(id, n, f.users[n.UserID])
			}
		}
	}
	s.mu.Unlock()
	f.advance(rows, time.Now())
	if len(rows) == changeBatch {
		s.Notify() // more to read
	}
	s.prune(ctx)
	return nil
}

func slicesContains(s []int64, v int64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// userName makes sure the follower knows user id's name.
func (s *Server) userName(ctx context.Context, id int64) error {
	if _, ok := s.fol.users[id]; ok {
		return nil
	}
	u, err := s.st.GetUser(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.fol.users[id] = ""
	case err != nil:
		return err
	default:
		s.fol.users[id] = u.Name
	}
	return nil
}

// loadAll reads the whole world from the store and applies it.
func (s *Server) loadAll(ctx context.Context) error {
	// The position is taken first: a change made while the rest is read
	// is read again after. Numbers up to fullLoadWindow before it are
	// read again too, for a PostgreSQL transaction that took its number
	// before and commits after.
	last, err := s.st.LastChange(ctx)
	if err != nil {
		return err
	}
	nodes, err := s.st.ListNodes(ctx, 0)
	if err != nil {
		return err
	}
	us, err := s.st.ListUsers(ctx)
	if err != nil {
		return err
	}
	users := make(map[int64]string, len(us))
	for _, u := range us {
		users[u.ID] = u.Name
	}
	ds, err := s.readDNS(ctx)
	if err != nil {
		return err
	}
	pu, err := s.readPolicy(ctx)
	if err != nil {
		return err
	}
	rs, err := s.readRelays(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.setDNSLocked(ds.cfg)
	s.setPolicyLocked(pu)
	if rs != nil {
		s.setRelaysLocked(*rs)
	}
	s.replaceWorldLocked(nodes, users)
	s.mu.Unlock()
	s.fol = follower{loaded: true, cursor: max(0, last-fullLoadWindow), pruned: s.fol.pruned, users: users}
	return nil
}

// prune trims the change log when it has grown by pruneEvery since the
// last pruning, keeping the last pruneKeep changes.
func (s *Server) prune(ctx context.Context) {
	if s.rep.rs != nil {
		s.pruneByAge(ctx)
		return
	}
	f := &s.fol
	if f.cursor-f.pruned < pruneKeep+pruneEvery {
		return
	}
	upTo := f.cursor - pruneKeep
	if err := s.st.PruneChanges(ctx, upTo); err != nil {
		s.log.Error("control: pruning the change log failed", "err", err)
		return
	}
	f.pruned = upTo
}

// policyUpdate is a policy read from the store, parsed outside the lock.
type policyUpdate struct {
	text string
	p    *policy.Policy
	bad  bool // the text does not parse: keep the policy in force
	id   int64
	err  error
}

func (s *Server) readPolicy(ctx context.Context) (*policyUpdate, error) {
	sp, err := s.st.Policy(ctx)
	if err != nil {
		return nil, err
	}
	pu := &policyUpdate{text: sp.Text, id: sp.ID}
	if sp.Text != "" {
		if pu.p, pu.err = policy.Parse([]byte(sp.Text)); pu.err != nil {
			pu.bad = true
		}
	}
	return pu, nil
}

// lockNode takes node id's gate (see the top of this file) and returns
// its release. s.mu must not be held.
func (s *Server) lockNode(id uint64) func() {
	s.gateMu.Lock()
	g := s.gates[id]
	if g == nil {
		g = &nodeGate{}
		s.gates[id] = g
	}
	g.refs++
	s.gateMu.Unlock()
	g.mu.Lock()
	return func() {
		g.mu.Unlock()
		s.gateMu.Lock()
		if g.refs--; g.refs == 0 {
			delete(s.gates, id)
		}
		s.gateMu.Unlock()
	}
}

type nodeGate struct {
	mu   sync.Mutex
	refs int // under Server.gateMu
}

// sweep corrects stored nodes that have no stream here: a node the store
// says is online is marked offline (a stream of a previous server
// process), and an ephemeral node offline for longer than EphemeralGrace
// is deleted; a WireGuard-only member is online only as its gateway's
// stream reports it. The writes are logged changes, applied by the next pass.
func (s *Server) sweep() {
	now := s.clk.Now()
	type fix struct {
		n       *store.Node
		offline bool
		del     bool
	}
	var fixes []fix
	replica, duties := s.opts.Replica, s.hasDuties()
	s.mu.Lock()
	for id, n := range s.nodes {
		if s.sessions[id] != nil {
			continue
		}
		if n.Via != 0 && s.sessions[uint64(n.Via)] != nil {
			continue // a WireGuard-only member: its gateway reports it
		}
		// Alone, every node online without a stream here is stale; a
		// replica corrects only its own (its others are other replicas'
		// streams, whose lapse the duty holder handles).
		f := fix{n: n, offline: n.Online && (replica == "" || n.Replica == replica)}
		if n.Ephemeral && duties && (replica == "" || !n.Online || f.offline) {
			since := n.LastSeen
			if since.IsZero() || n.Created.After(since) {
				since = n.Created
			}
			f.del = now.Sub(since) >= s.opts.EphemeralGrace
		}
		if f.offline || f.del {
			fixes = append(fixes, f)
		}
	}
	s.mu.Unlock()
	changed := false
	for _, f := range fixes {
		if s.sweepNode(f.n, f.offline, f.del) {
			changed = true
		}
	}
	if changed {
		s.Notify()
	}
}

// sweepNode applies one sweep fix unless the node got a stream meanwhile;
// it reports whether it wrote.
func (s *Server) sweepNode(n *store.Node, offline, del bool) bool {
	unlock := s.lockNode(uint64(n.ID))
	defer unlock()
	s.mu.Lock()
	streaming := s.sessions[uint64(n.ID)] != nil
	s.mu.Unlock()
	if streaming {
		return false
	}
	ctx, cancel := storeCtx()
	defer cancel()
	wrote := false
	if offline {
		if err := s.setOnline(ctx, n.ID, false, n.LastSeen); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("control: marking the node offline failed", "node", n.ID, "err", err)
			return false
		}
		wrote = true
	}
	if del {
		err := s.deleteEphemeral(ctx, n.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			s.log.Error("control: deleting an ephemeral node failed", "node", n.ID, "err", err)
		default:
			s.log.Info("control: deleted ephemeral node", "node", n.ID, "name", n.Name)
			wrote = true
		}
	}
	return wrote
}
