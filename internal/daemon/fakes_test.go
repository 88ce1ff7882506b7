package daemon

import (
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/dns"
	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/peerrelay"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/uapi"
)

// fakeEngine is an in-memory Engine: it keeps the peers the daemon
// configured the way the device would (uapi semantics: replace, remove,
// replace allowed IPs) and what it gave the path layer, so tests can ask
// what the engine holds now.
type fakeEngine struct {
	mu      sync.Mutex
	key     noise.PrivateKey
	peers   map[noise.PublicKey]*fakePeer
	applied int      // Apply calls that changed peers
	ops     []peerOp // peer changes
	// misordered: an Apply removed a peer after adding or changing
	// one (removals must come first: they free allowed IPs).
	misordered bool
	filter     *filter.Filter
	stats      map[noise.PublicKey]device.PeerStats
	paths      map[pubkey.Node]magicsock.Path
	node       pubkey.Node // the path layer's node key
	disco      pubkey.Disco
	msPeers    []magicsock.PeerInfo
	gone       chan struct{}
	closed     bool
}

type fakePeer struct {
	endpoint string
	allowed  []netip.Prefix
}

func newFakeEngine() *fakeEngine {
	dk, _ := noise.GeneratePrivateKey()
	return &fakeEngine{peers: map[noise.PublicKey]*fakePeer{}, stats: map[noise.PublicKey]device.PeerStats{},
		paths: map[pubkey.Node]magicsock.Path{}, disco: pubkey.Disco{PublicKey: dk.PublicKey()}, gone: make(chan struct{})}
}

func (e *fakeEngine) Apply(c *uapi.Config) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.PrivateKey != nil {
		e.key = *c.PrivateKey
	}
	if c.ReplacePeers {
		e.peers = map[noise.PublicKey]*fakePeer{}
	}
	if c.ReplacePeers {
		e.ops = append(e.ops, peerOp{op: "remove all"})
	}
	changed := false
	for _, pc := range c.Peers {
		if pc.Remove {
			delete(e.peers, pc.PublicKey)
			e.ops = append(e.ops, peerOp{"remove", pc.PublicKey})
			e.misordered = e.misordered || changed
			continue
		}
		changed = true
		switch {
		case e.peers[pc.PublicKey] == nil:
			e.ops = append(e.ops, peerOp{"add", pc.PublicKey})
		case pc.ReplaceAllowedIPs:
			e.ops = append(e.ops, peerOp{"allowed", pc.PublicKey})
		}
		p := e.peers[pc.PublicKey]
		if p == nil {
			if pc.UpdateOnly {
				continue
			}
			p = &fakePeer{}
			e.peers[pc.PublicKey] = p
		}
		if pc.Endpoint != "" {
			p.endpoint = pc.Endpoint
		}
		if pc.ReplaceAllowedIPs {
			p.allowed = nil
		}
		for _, a := range pc.AllowedIPs {
			// An allowed IP moves to the last peer given it.
			for _, q := range e.peers {
				q.allowed = slices.DeleteFunc(q.allowed, func(b netip.Prefix) bool { return b == a.Masked() })
			}
			p.allowed = append(p.allowed, a.Masked())
		}
	}
	if len(c.Peers) > 0 || c.ReplacePeers {
		e.applied++
	}
	return nil
}

type peerOp struct {
	op  string
	key noise.PublicKey
}

// takeOps returns the peer changes since the last call as "OP NAME",
// sorted, naming peers by names.
func (e *fakeEngine) takeOps(names map[noise.PublicKey]string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, o := range e.ops {
		if o.key.IsZero() {
			out = append(out, o.op)
			continue
		}
		out = append(out, o.op+" "+names[o.key])
	}
	e.ops = nil
	slices.Sort(out)
	return out
}

// peerKeys lists the engine's peers.
func (e *fakeEngine) peerKeys() []noise.PublicKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Collect(maps.Keys(e.peers))
}

// allowed is peer k's allowed IPs, sorted; ok false when k is no peer.
func (e *fakeEngine) allowed(k noise.PublicKey) (out []netip.Prefix, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.peers[k]
	if p == nil {
		return nil, false
	}
	out = slices.Clone(p.allowed)
	sortPrefixes(out)
	return out, true
}

func (e *fakeEngine) privateKey() noise.PrivateKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.key
}

func (e *fakeEngine) setStats(k noise.PublicKey, s device.PeerStats) {
	e.mu.Lock()
	e.stats[k] = s
	e.mu.Unlock()
}

func (e *fakeEngine) setPath(k pubkey.Node, p magicsock.Path) {
	e.mu.Lock()
	e.paths[k] = p
	e.mu.Unlock()
}

func (e *fakeEngine) PeerStats(k noise.PublicKey) (device.PeerStats, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.peers[k] == nil {
		return device.PeerStats{}, false
	}
	return e.stats[k], true
}

func (e *fakeEngine) Port() uint16 { return 41641 }
func (e *fakeEngine) SetFilter(f *filter.Filter) {
	e.mu.Lock()
	e.filter = f
	e.mu.Unlock()
}
func (e *fakeEngine) SetTap(*device.Tap)       {}
func (e *fakeEngine) Up() error                { return nil }
func (e *fakeEngine) TUNGone() <-chan struct{} { return e.gone }
func (e *fakeEngine) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
}
func (e *fakeEngine) SetPeers(p []magicsock.PeerInfo) {
	e.mu.Lock()
	e.msPeers = slices.Clone(p)
	e.mu.Unlock()
}
func (e *fakeEngine) PeerPath(k pubkey.Node) magicsock.Path {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.paths[k]
}
func (e *fakeEngine) SetNodeKey(k pubkey.Node) {
	e.mu.Lock()
	e.node = k
	e.mu.Unlock()
}
func (e *fakeEngine) DiscoPublic() pubkey.Disco                        { return e.disco }
func (e *fakeEngine) SetLocalEndpoints([]netip.AddrPort)               {}
func (e *fakeEngine) Discovered() []netip.AddrPort                     { return nil }
func (e *fakeEngine) SetRelay(magicsock.Relay)                         {}
func (e *fakeEngine) SetSTUN([]netip.AddrPort, func([]netip.AddrPort)) {}
func (e *fakeEngine) ReceiveRelayed(pubkey.Node, []byte)               {}
func (e *fakeEngine) SetPeerRelays([]magicsock.PeerRelayInfo)          {}
func (e *fakeEngine) NewPeerRelayServer(tr conn.Transport) *peerrelay.Server {
	dk, _ := noise.GeneratePrivateKey()
	return peerrelay.NewServer(tr, peerrelay.Options{DiscoKey: dk})
}

// fakeRouter is an in-memory Router that records the host configuration
// the daemon asked for.
type fakeRouter struct {
	mu          sync.Mutex
	up          bool
	addrs       []netip.Prefix
	routes      []netip.Prefix
	tunnel      []netip.Prefix // table 52 via the tunnel
	unreachable []netip.Prefix // table 52 unreachable (fail closed)
	allowLAN    bool
	forwarding  []netip.Prefix
	resolver    []netip.Addr // what the host resolver points at; nil: the original
	search      []string
	resolverSet int
	hostDNS     []netip.Addr
	dnsListen   []netip.AddrPort
	cleanups    int
	addrErr     error // returned by SetAddresses when set
}

func sortPrefixes(p []netip.Prefix) {
	slices.SortFunc(p, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}

func sorted(p []netip.Prefix) []netip.Prefix {
	p = slices.Clone(p)
	sortPrefixes(p)
	return p
}

func (r *fakeRouter) Up(int) error {
	r.mu.Lock()
	r.up = true
	r.mu.Unlock()
	return nil
}
func (r *fakeRouter) SetAddresses(addrs, routes []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.addrErr != nil {
		return r.addrErr
	}
	r.addrs, r.routes = sorted(addrs), sorted(routes)
	return nil
}
func (r *fakeRouter) ClearAddresses() error { return r.SetAddresses(nil, nil) }
func (r *fakeRouter) SetTunnelRoutes(routes, unreachable []netip.Prefix, allowLAN bool, _, _ netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tunnel, r.unreachable, r.allowLAN = sorted(routes), sorted(unreachable), allowLAN
	return nil
}
func (r *fakeRouter) ClearTunnelRoutes() error {
	return r.SetTunnelRoutes(nil, nil, false, netip.Addr{}, netip.Addr{})
}
func (r *fakeRouter) SetForwarding(routes []netip.Prefix) error {
	r.mu.Lock()
	r.forwarding = sorted(routes)
	r.mu.Unlock()
	return nil
}
func (r *fakeRouter) Cleanup(*slog.Logger) {
	r.mu.Lock()
	r.cleanups++
	r.mu.Unlock()
}
func (r *fakeRouter) HostResolvers() ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hostDNS == nil {
		return nil, errors.New("no resolv.conf")
	}
	return slices.Clone(r.hostDNS), nil
}
func (r *fakeRouter) SetHostResolver(ns []netip.Addr, search []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resolver, r.search = slices.Clone(ns), slices.Clone(search)
	r.resolverSet++
	return nil
}
func (r *fakeRouter) RestoreHostResolver() error {
	r.mu.Lock()
	r.resolver, r.search = nil, nil
	r.mu.Unlock()
	return nil
}
func (r *fakeRouter) ListenDNS(_ *dns.Server, a netip.AddrPort) error {
	r.mu.Lock()
	r.dnsListen = append(r.dnsListen, a)
	r.mu.Unlock()
	return nil
}
func (r *fakeRouter) SocketControl(string, string, syscall.RawConn) error { return nil }

// get runs f under the router's lock (to read its fields).
func (r *fakeRouter) get(f func(r *fakeRouter)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

var (
	_ Engine = (*fakeEngine)(nil)
	_ Router = (*fakeRouter)(nil)
)
