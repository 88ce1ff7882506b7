package daemon

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"syscall"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/dns"
	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/netcfg"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/peerrelay"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/resolvconf"
	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

// The daemon reaches the data plane and the host through two seams, so
// that what it decides (which peers, which routes, which exit node, what
// the host resolver says) can be tested in process without root: Engine
// (the WireGuard engine and the path layer beneath it) and Router (the
// host's network configuration). Run builds the real ones (deviceEngine,
// linuxRouter) unless a test set others first.

// Engine is what the daemon uses of the WireGuard engine (package device)
// and of the path layer under it (package magicsock). The engine's half
// names peers by noise.PublicKey, as WireGuard does (any peer's static
// key); the path layer's half by the mesh's typed keys (pubkey.Node,
// pubkey.Disco), as the network map does.
type Engine interface {
	// The engine.
	Apply(*uapi.Config) error
	PeerStats(noise.PublicKey) (device.PeerStats, bool)
	Port() uint16 // the bound UDP port; 0 before Up
	SetFilter(*filter.Filter)
	SetTap(*device.Tap)
	Up() error
	TUNGone() <-chan struct{} // closed when the tunnel interface goes away
	Close()

	// The path layer.
	SetPeers([]magicsock.PeerInfo)
	PeerPath(pubkey.Node) magicsock.Path
	SetNodeKey(pubkey.Node)
	DiscoPublic() pubkey.Disco
	SetLocalEndpoints([]netip.AddrPort)
	Discovered() []netip.AddrPort
	SetRelay(magicsock.Relay)
	SetSTUN([]netip.AddrPort, func([]netip.AddrPort))
	ReceiveRelayed(pubkey.Node, []byte)
	SetPeerRelays([]magicsock.PeerRelayInfo)
	// NewPeerRelayServer is a peer relay on tr with the path layer's disco
	// key (peerrelay.go).
	NewPeerRelayServer(tr conn.Transport) *peerrelay.Server
}

// Router is the host side of the node: the tunnel interface's addresses
// and routes (netcfg), routing table 52 and its policy rules (routing.go),
// IP forwarding and the nftables table (forward.go), the host resolver
// (resolvconf) and the marking and binding of the daemon's own sockets.
type Router interface {
	// Up sets the tunnel interface's MTU and brings it up.
	Up(mtu int) error
	// SetAddresses makes the interface hold exactly addrs and routes
	// (netcfg.Link.Set); ClearAddresses removes them.
	SetAddresses(addrs, routes []netip.Prefix) error
	ClearAddresses() error
	// SetTunnelRoutes makes table 52 and its rules match (see
	// tunnelRoutes.Set); ClearTunnelRoutes removes them.
	SetTunnelRoutes(routes, unreachable []netip.Prefix, allowLAN bool, src4, src6 netip.Addr) error
	ClearTunnelRoutes() error
	// SetForwarding makes the node forward and masquerade for routes
	// (none: forwarding off, sysctls restored).
	SetForwarding(routes []netip.Prefix) error
	// Cleanup removes what a crashed daemon left: rules, table 52, the
	// NAT table, changed forwarding sysctls.
	Cleanup(log *slog.Logger)
	// HostResolvers are the host's resolvers (to forward to).
	HostResolvers() ([]netip.Addr, error)
	// SetHostResolver points the host resolver at nameservers with
	// search domains; RestoreHostResolver puts back what was there.
	SetHostResolver(nameservers []netip.Addr, search []string) error
	RestoreHostResolver() error
	// ListenDNS has srv answer on addr, bound to the tunnel interface.
	ListenDNS(srv *dns.Server, addr netip.AddrPort) error
	// SocketControl marks a daemon socket to stay on the underlay
	// (net.Dialer.Control).
	SocketControl(network, address string, c syscall.RawConn) error
}

// deviceEngine is the real Engine: the TUN device, the UDP transport,
// magicsock and the device over them.
type deviceEngine struct {
	*device.Device
	ms       *magicsock.Conn
	tr       *udp.Transport
	tunStats *tun.Stats // offload batching of the TUN device, for metrics
	inline   bool       // run-to-completion datapath
}

// newDeviceEngine creates the TUN interface and the engine on it.
func newDeviceEngine(cfg Config, key noise.PrivateKey, log *slog.Logger) (*deviceEngine, error) {
	td, err := tun.Create(cfg.TUN, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", cfg.TUN, err)
	}
	return newEngineOn(td, key, log)
}

// newEngineOn creates the engine on a packet device (the TUN device, or
// the userspace netstack's); it closes td if it fails.
func newEngineOn(td tun.Device, key noise.PrivateKey, log *slog.Logger) (*deviceEngine, error) {
	var err error
	e := &deviceEngine{}
	if sd, ok := td.(tun.StatsDevice); ok {
		e.tunStats = sd.Stats()
	}
	e.tr = udp.New()
	e.tr.SetLogger(log)
	disco, err := noise.GeneratePrivateKey() // per run: peers learn it from the map
	if err != nil {
		td.Close()
		return nil, err
	}
	e.ms = magicsock.New(e.tr, magicsock.Options{NodeKey: pubkey.Node{PublicKey: key.PublicKey()}, DiscoKey: disco, Logger: log})
	e.inline, err = device.DatapathFromEnv()
	if err != nil {
		td.Close()
		return nil, err
	}
	e.Device = device.New(td, e.ms, device.Options{Logger: log, RunToCompletion: e.inline})
	return e, nil
}

func (e *deviceEngine) SetPeers(p []magicsock.PeerInfo)            { e.ms.SetPeers(p) }
func (e *deviceEngine) PeerPath(k pubkey.Node) magicsock.Path      { return e.ms.PeerPath(k) }
func (e *deviceEngine) SetNodeKey(k pubkey.Node)                   { e.ms.SetNodeKey(k) }
func (e *deviceEngine) DiscoPublic() pubkey.Disco                  { return e.ms.DiscoPublic() }
func (e *deviceEngine) SetLocalEndpoints(eps []netip.AddrPort)     { e.ms.SetLocalEndpoints(eps) }
func (e *deviceEngine) Discovered() []netip.AddrPort               { return e.ms.Discovered() }
func (e *deviceEngine) SetRelay(r magicsock.Relay)                 { e.ms.SetRelay(r) }
func (e *deviceEngine) ReceiveRelayed(src pubkey.Node, pkt []byte) { e.ms.ReceiveRelayed(src, pkt) }
func (e *deviceEngine) SetPeerRelays(r []magicsock.PeerRelayInfo)  { e.ms.SetPeerRelays(r) }
func (e *deviceEngine) NewPeerRelayServer(tr conn.Transport) *peerrelay.Server {
	return e.ms.NewPeerRelayServer(tr)
}
func (e *deviceEngine) SetSTUN(servers []netip.AddrPort, f func([]netip.AddrPort)) {
	e.ms.SetSTUN(servers, f)
}

// linuxRouter is the real Router, over netlink, nftables, /proc/sys and
// the resolver configuration.
type linuxRouter struct {
	ifname   string
	stateDir string
	link     *netcfg.Link
	tun      *tunnelRoutes
	fwd      *forwarder
	rc       *resolvconf.Manager
	resolved bool // the host resolver was set through systemd-resolved
}

func newLinuxRouter(cfg Config) *linuxRouter {
	return &linuxRouter{
		ifname: cfg.TUN, stateDir: cfg.StateDir,
		link: netcfg.New(cfg.TUN),
		tun:  newTunnelRoutes(cfg.TUN),
		fwd:  &forwarder{stateDir: cfg.StateDir, tun: cfg.TUN},
		rc:   resolvconf.New(cfg.ResolvConf, filepath.Join(cfg.StateDir, resolvBackupFile)),
	}
}

func (r *linuxRouter) Up(mtu int) error { return r.link.Up(mtu) }
func (r *linuxRouter) SetAddresses(addrs, routes []netip.Prefix) error {
	return r.link.Set(addrs, routes)
}
func (r *linuxRouter) ClearAddresses() error { return r.link.Clear() }
func (r *linuxRouter) SetTunnelRoutes(routes, unreachable []netip.Prefix, allowLAN bool, src4, src6 netip.Addr) error {
	return r.tun.Set(routes, unreachable, allowLAN, src4, src6)
}
func (r *linuxRouter) ClearTunnelRoutes() error                  { return r.tun.Clear() }
func (r *linuxRouter) SetForwarding(routes []netip.Prefix) error { return r.fwd.set(routes) }

func (r *linuxRouter) Cleanup(log *slog.Logger) {
	if err := cleanupRouting(); err != nil {
		log.Warn("remove leftover tunnel routes and rules", "err", err)
	}
	// Leftovers of a crash: the NAT table, and forwarding sysctls that
	// were changed (restored now; turned on again if the map says so).
	if err := deleteNAT(); err != nil {
		log.Debug("remove leftover NAT table", "err", err)
	}
	if err := restoreForwarding(r.stateDir); err != nil {
		log.Warn("restore forwarding sysctls", "err", err)
	}
}

func (r *linuxRouter) HostResolvers() ([]netip.Addr, error) { return r.rc.Upstreams() }

func (r *linuxRouter) SetHostResolver(nameservers []netip.Addr, search []string) error {
	if resolvconf.SharedWithHost(r.rc.Path()) {
		return fmt.Errorf("accept-dns: refusing to rewrite %s: this daemon runs in a network namespace and the file is the host's; create /etc/netns/NAME/resolv.conf or pass --resolv-conf", r.rc.Path())
	}
	if r.resolved = resolvconf.Resolved(r.rc.Path()); r.resolved {
		// systemd-resolved manages the host: configure the tunnel link
		// there (reverted on down and exit), not the file.
		return resolvconf.SetResolved(r.ifname, nameservers, search)
	}
	return r.rc.Set(nameservers, search)
}

func (r *linuxRouter) RestoreHostResolver() error {
	if r.resolved {
		r.resolved = false
		if err := resolvconf.RevertResolved(r.ifname); err != nil {
			return fmt.Errorf("revert systemd-resolved settings: %w", err)
		}
		return nil
	}
	return r.rc.Restore()
}

func (r *linuxRouter) ListenDNS(srv *dns.Server, addr netip.AddrPort) error {
	_, err := srv.ListenDevice(addr, r.ifname)
	return err
}

func (r *linuxRouter) SocketControl(network, address string, c syscall.RawConn) error {
	return markControl(network, address, c)
}
