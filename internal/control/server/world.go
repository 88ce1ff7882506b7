package server

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"slices"
	"time"

	"warren/internal/control/proto"
	"warren/internal/netmap"
	"warren/internal/noise"
	"warren/internal/store"
)

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
