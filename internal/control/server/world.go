package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"time"

	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/policy"
	"github.com/warrenmesh/warren/internal/store"
)

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// toNetmap converts a stored node; ok is false for a node that cannot be
// represented (a malformed key) or waits for an admin's approval, which is
// left out of every map.
func toNetmap(n *store.Node, user string) (netmap.Node, bool) {
	key := n.NodeKey // zero if the stored key did not parse
	if key.IsZero() || !dnsname.IsLabel(n.Name) || !n.Approved {
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
	disco := n.DiscoKey // zero if none or not usable (pubkey.ParseDisco)
	return netmap.Node{
		ID: uint64(n.ID), Name: n.Name, User: user, Key: key, DiscoKey: disco,
		Addresses: addrs, AllowedIPs: addrs, Endpoints: eps,
		Online: n.Online, LastSeen: n.LastSeen, Expiry: n.Expiry,
		Routes: n.EnabledRoutes(), Tags: slices.Clone(n.Tags), Via: uint64(n.Via), RelayPort: relayPort(n),
		Traffic: trafficOf(n),
	}, true
}

// relayPort is the port a node serves as a peer relay on, 0 unless an
// admin approved it.
func relayPort(n *store.Node) uint16 {
	if n.IsPeerRelay() {
		return n.RelayPort
	}
	return 0
}

// dnsUpdate is the DNS configuration read from the store.
type dnsUpdate struct{ cfg netmap.DNSConfig }

func (s *Server) readDNS(ctx context.Context) (*dnsUpdate, error) {
	sdns, err := s.st.DNSConfig(ctx)
	if err != nil {
		return nil, err
	}
	dns := dnsConfigFromStore(sdns)
	dns.SearchDomains = []string{s.opts.Domain}
	dns.Nameservers = s.st.ServiceAddrs() // where each node answers for itself
	return &dnsUpdate{cfg: dns}, nil
}

// setDNSLocked queues a DNS configuration that differs from the one in
// force; s.mu held.
func (s *Server) setDNSLocked(dns netmap.DNSConfig) {
	if !dns.Equal(s.dns) {
		s.dns = dns
		s.dnsDirty = true
		s.kickFanout()
	}
}

// replaceWorldLocked replaces the world with every stored node (users:
// their users' names) and queues what changed for the next fanout; s.mu
// held.
func (s *Server) replaceWorldLocked(nodes []*store.Node, users map[int64]string) {
	nw := &netmap.NetworkMap{Peers: make([]netmap.Node, 0, len(nodes))}
	idents := make(map[uint64]policy.Node, len(nodes))
	recs := make(map[uint64]*store.Node, len(nodes))
	for _, n := range nodes {
		if nn, ok := toNetmap(n, users[n.UserID]); ok {
			old, _ := s.world.Peer(nn.ID)
			s.gateTrafficLocked(&nn, old)
			nw.Peers = append(nw.Peers, nn)
			idents[nn.ID] = identOf(n, &nn)
		}
		recs[uint64(n.ID)] = n
	}
	for id := range s.traffic.last {
		if _, ok := recs[id]; !ok {
			s.forgetTrafficLocked(id)
		}
	}
	slices.SortFunc(nw.Peers, func(a, b netmap.Node) int { return cmp.Compare(a.ID, b.ID) })
	s.setIdentsLocked(idents)
	d := netmap.Diff(s.world, nw)
	for i := range d.PeersAdded {
		s.markDirtyLocked(d.PeersAdded[i].ID, nil)
	}
	for _, id := range d.PeersRemoved {
		s.markDirtyLocked(id, s.world)
	}
	for i := range d.PeersChanged {
		s.markDirtyLocked(d.PeersChanged[i].ID, s.world)
	}
	s.world = nw
	s.nodes = recs
	s.loaded = true
	s.kickFanout()
}

// markDirtyLocked records, before the world changes node id, its value as
// of the last fanout (nil if it was not in the world); s.mu held. The next
// fanout sends what changed since.
func (s *Server) markDirtyLocked(id uint64, world *netmap.NetworkMap) {
	delete(s.enc, id)
	s.wakeWatchersLocked()
	delete(s.encHash, id)
	if _, ok := s.dirty[id]; ok {
		return
	}
	var old *netmap.Node
	if world != nil {
		if n, ok := world.Peer(id); ok {
			c := n.Clone()
			old = &c
		}
	}
	s.dirty[id] = old
}

// applyNodeLocked puts node id as read from the store (nil: deleted) into
// the world, with its user's name, and queues the change for the next
// fanout; s.mu held.
func (s *Server) applyNodeLocked(id uint64, n *store.Node, user string) {
	var next []netmap.Node
	if n != nil {
		s.nodes[id] = n
		if nn, ok := toNetmap(n, user); ok {
			next = []netmap.Node{nn}
		}
	} else {
		delete(s.nodes, id)
	}
	if next != nil {
		ident := identOf(n, &next[0])
		s.setIdentLocked(id, &ident)
	} else {
		s.setIdentLocked(id, nil)
	}
	if s.pol.dirty {
		s.kickFanout() // a tag change alone is no world change
	}
	i, found := slices.BinarySearchFunc(s.world.Peers, id, func(n netmap.Node, id uint64) int { return cmp.Compare(n.ID, id) })
	switch {
	case next == nil:
		s.forgetTrafficLocked(id)
	case found:
		s.gateTrafficLocked(&next[0], &s.world.Peers[i])
	default:
		s.gateTrafficLocked(&next[0], nil)
	}
	switch {
	case !found && next == nil, found && next != nil && s.world.Peers[i].Equal(&next[0]):
		return
	}
	s.markDirtyLocked(id, s.world)
	switch {
	case found && next == nil:
		s.world.Peers = slices.Delete(s.world.Peers, i, i+1)
	case found:
		s.world.Peers[i] = next[0]
	case next != nil:
		s.world.Peers = slices.Insert(s.world.Peers, i, next[0])
	}
	s.kickFanout()
}

// kickFanout wakes the fanout goroutine.
func (s *Server) kickFanout() {
	select {
	case s.fanKick <- struct{}{}:
	default:
	}
}

// Fanout pacing: after a fanout to n streams the next one waits n ×
// fanoutPacePerStream (at most fanoutMaxPace), and changes made meanwhile
// go out together, one delta per stream. A lone change goes out at once;
// a burst (every node reconnecting after a restart: each connect is a
// change for every other stream) costs a bounded number of messages per
// second instead of streams × changes.
const (
	fanoutPacePerStream = 50 * time.Microsecond
	fanoutMaxPace       = time.Second
)

// fanouter sends the queued changes to every stream, paced.
func (s *Server) fanouter() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.fanKick:
		}
		s.mu.Lock()
		n := len(s.sessions)
		s.fanoutLocked()
		s.mu.Unlock()
		t := time.NewTimer(min(time.Duration(n)*fanoutPacePerStream, fanoutMaxPace))
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// snapshotDirtyLocked returns, for a stream whose full map is being built
// from the current world, the current value of every node changed since
// the last fanout: what its next delta must start from. s.mu held.
func (s *Server) snapshotDirtyLocked() map[uint64]*netmap.Node {
	if len(s.dirty) == 0 {
		return nil
	}
	base := make(map[uint64]*netmap.Node, len(s.dirty))
	for id := range s.dirty {
		if n, ok := s.world.Peer(id); ok {
			c := n.Clone()
			base[id] = &c
		} else {
			base[id] = nil
		}
	}
	return base
}

// diffDirtyLocked is the delta from the nodes' values at the last fanout
// (or, for those in base, their values in base) to their current values in
// the world; s.mu held.
func (s *Server) diffDirtyLocked(base map[uint64]*netmap.Node) netmap.Delta {
	ids := make([]uint64, 0, len(s.dirty))
	for id := range s.dirty {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var old, cur netmap.NetworkMap
	for _, id := range ids {
		o := s.dirty[id]
		if b, ok := base[id]; ok {
			o = b
		}
		if o != nil {
			old.Peers = append(old.Peers, *o)
		}
		if n, ok := s.world.Peer(id); ok {
			cur.Peers = append(cur.Peers, *n)
		}
	}
	return netmap.Diff(&old, &cur)
}

// fanoutLocked queues each stream's delta for the changes made since the
// last fanout; s.mu held. Streams whose full map was built since then
// start from the values it had. A delta that is the same for every stream
// (it does not concern the stream's own node) is encoded once.
func (s *Server) fanoutLocked() {
	s.compileLocked()
	if len(s.dirty) == 0 && !s.dnsDirty && !s.pol.changed && !s.relaysDirty {
		return
	}
	filtersChanged := s.pol.changed
	s.pol.changed = false
	d := s.diffDirtyLocked(nil)
	var dns *netmap.DNSConfig
	if s.dnsDirty {
		dns = &s.dns
		d.DNS = dns
		s.dnsDirty = false
	}
	var relays *[]netmap.RelayRegion
	if s.relaysDirty {
		relays = ptrTo(slices.Clone(s.relays))
		if *relays == nil {
			*relays = []netmap.RelayRegion{}
		}
		d.Relays = relays
		s.relaysDirty = false
	}
	var tmpl *deltaTemplate
	if !d.IsEmpty() {
		var err error
		if tmpl, err = newDeltaTemplate(&netmap.Delta{PeersAdded: d.PeersAdded, PeersRemoved: d.PeersRemoved, PeersChanged: d.PeersChanged, DNS: dns, Relays: relays}); err != nil {
			s.log.Error("control: encoding a delta failed", "err", err) // each stream encodes its own below
		}
	}
	for id, ss := range s.sessions {
		base := ss.base
		ss.base = nil
		if ss.isDead() || ss.version == 0 { // dead, or its full map is not built yet
			continue
		}
		sd := &d
		if base != nil {
			bd := s.diffDirtyLocked(base)
			sd = &bd
		}
		if slices.Contains(sd.PeersRemoved, id) {
			ss.refuse(proto.CodeNodeDeleted, "this node was deleted from the deployment")
			continue
		}
		if self, ok := s.world.Peer(id); ok && expired(self, s.clk.Now()) {
			ss.refuse(proto.CodeNodeExpired, expiredMessage)
			continue
		}
		var filter json.RawMessage
		filterChanged := false
		if filtersChanged {
			filter = s.filterLocked(id)
			filterChanged = !bytes.Equal(filter, ss.filter)
		}
		if sd == &d && tmpl != nil && !concerns(&d, id) && !filterChanged {
			b, err := tmpl.encode(ss.version, ss.version+1)
			if err != nil {
				s.log.Error("control: encoding a message failed", "node", id, "err", err)
				ss.kill()
				continue
			}
			ss.version++
			ss.sendBytes(b)
			s.stats.deltas.Add(1)
			continue
		}
		nd := netmap.Delta{From: ss.version, To: ss.version + 1, DNS: dns, Relays: relays}
		if filterChanged { // this node's own filter: a per-stream delta
			if nd.PacketFilter = filter; filter == nil {
				nd.PacketFilter = json.RawMessage("null")
			}
			ss.filter = filter
		}
		for i := range sd.PeersAdded {
			if sd.PeersAdded[i].ID == id {
				nd.Self = &sd.PeersAdded[i]
			} else {
				nd.PeersAdded = append(nd.PeersAdded, sd.PeersAdded[i])
			}
		}
		nd.PeersRemoved = append(nd.PeersRemoved, sd.PeersRemoved...)
		for i := range sd.PeersChanged {
			if sd.PeersChanged[i].ID == id {
				if self, ok := s.world.Peer(id); ok {
					nd.Self = self
				}
			} else {
				nd.PeersChanged = append(nd.PeersChanged, sd.PeersChanged[i])
			}
		}
		if nd.IsEmpty() {
			continue
		}
		ss.version++
		ss.send(&proto.Message{MapResponse: &proto.MapResponse{Delta: &nd}})
		s.stats.deltas.Add(1)
	}
	clear(s.dirty)
}

// concerns reports whether d adds or changes node id.
func concerns(d *netmap.Delta, id uint64) bool {
	for i := range d.PeersAdded {
		if d.PeersAdded[i].ID == id {
			return true
		}
	}
	for i := range d.PeersChanged {
		if d.PeersChanged[i].ID == id {
			return true
		}
	}
	return false
}

// fullMapLocked builds node id's full map from the world; s.mu held.
func (s *Server) fullMapLocked(id uint64, version uint64) (*netmap.NetworkMap, bool) {
	m := &netmap.NetworkMap{Version: version, Domain: s.opts.Domain, DNS: s.dns.Clone(), Relays: slices.Clone(s.relays), Peers: make([]netmap.Node, 0, len(s.world.Peers)),
		PacketFilter: s.filterLocked(id)}
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

// expiredMessage is what an expired node's stream is refused with.
const expiredMessage = "this node's key has expired; run `warren up --force-reauth` to sign in again (or add --auth-key KEY)"

func expired(n *netmap.Node, now time.Time) bool {
	return !n.Expiry.IsZero() && !n.Expiry.After(now)
}

// refuseExpiredLocked closes the streams of nodes whose expiry has passed.
// Peers keep the expired node in their maps, marked by its expiry time, and
// stop using it; s.mu held.
func (s *Server) refuseExpiredLocked() {
	now := s.clk.Now()
	for id, ss := range s.sessions {
		if n, ok := s.world.Peer(id); ok && expired(n, now) && !ss.isDead() {
			ss.refuse(proto.CodeNodeExpired, expiredMessage)
		}
	}
}

// nextExpiryLocked is how long until the next node expiry in the world
// (capped at an hour); s.mu held.
func (s *Server) nextExpiryLocked() time.Duration {
	now := s.clk.Now()
	next := time.Hour
	for i := range s.world.Peers {
		if e := s.world.Peers[i].Expiry; !e.IsZero() && e.After(now) {
			next = min(next, e.Sub(now)+time.Millisecond)
		}
	}
	return next
}

func ptrTo[T any](v T) *T { return &v }
