// Package daemon is the node agent behind `warren daemon`: it owns the
// node's state directory (private key 0600, preferences, last network map),
// the tunnel interface and the WireGuard engine on top of it, the control
// client that keeps the network map current, and the translation of each
// new map into engine peers (keys, endpoints, allowed IPs) and into the
// interface's addresses and routes. It serves the local API (package
// localapi) that the CLI verbs drive: up, down, logout, status, ping.
//
// A registered node that was up when the daemon stopped comes back up on
// its own at the next start, first on its saved map (so tunnels work while
// the server is unreachable), then on what the server sends.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/proto"
	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/portmap"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/uapi"
)

// Config configures a Daemon.
type Config struct {
	// Version is Warren's version, reported to the server (with the OS)
	// for admins to see.
	Version     string
	StateDir    string // default /var/lib/warren
	Socket      string // default localapi.DefaultSocket
	SocketGroup string // group allowed to use the socket besides root
	TUN         string // interface name, default "warren0"
	Port        uint16 // UDP port, default DefaultPort; 0 = any
	MTU         int    // tunnel MTU, default device.DefaultMTU
	Logger      *slog.Logger
	// ResolvConf is the host resolver file `up --accept-dns` rewrites;
	// default /etc/resolv.conf.
	ResolvConf string
	// MetricsListen, if set, serves Prometheus metrics on /metrics at this
	// address (a bare port binds to loopback).
	MetricsListen string
	// Userspace runs the node without TUN, netlink, nftables or root:
	// the engine's packet device is a netstack (userspace.go). SOCKS5
	// and HTTPProxy, if set, are the loopback addresses of its proxies
	// to the mesh; ForwardInbound forwards TCP connections from the mesh
	// to the same port on the host's 127.0.0.1; ProxyDialTimeout bounds
	// a proxy's connection attempt (default 30 s).
	Userspace        bool
	SOCKS5           string
	HTTPProxy        string
	ForwardInbound   bool
	ProxyDialTimeout time.Duration
	// Clock times the daemon's periodic checks (the auto exit node's
	// liveness watch, the endpoint report and map re-apply loop) and the
	// control client's reconnect waits; nil is the real clock.
	Clock clock.Clock
	// NoLocalAPI runs the node without the local API socket (an embedded
	// node, package node: its program is its only client).
	NoLocalAPI bool
	// KeepGOMAXPROCS leaves GOMAXPROCS alone (an embedded node shares the
	// process with its program and with other nodes; see procs.go).
	KeepGOMAXPROCS bool
	// NoPortMap turns off asking the LAN's gateway to map the UDP port
	// (PCP, NAT-PMP, UPnP-IGD; `warren daemon --no-portmap`).
	NoPortMap bool
}

// Defaults.
const (
	DefaultStateDir = "/var/lib/warren"
	DefaultTUN      = "warren0"
	DefaultPort     = 41641
)

// Daemon is one node agent.
type Daemon struct {
	cfg Config
	log *slog.Logger
	clk clock.Clock // cfg.Clock, or the real clock

	eng    Engine         // the engine and the path layer (seams.go)
	router Router         // the host's network configuration (seams.go)
	procs  *procsGovernor // one P on small hosts, every CPU during file transfers
	ln     net.Listener
	// backoff, if set, is the control client's longest reconnect delay
	// (tests); zero: the client's default.
	backoff time.Duration
	// newRelay, if set, starts relay sessions instead of relay.NewClient
	// (tests).
	newRelay func(netmap.RelayRegion, relay.ClientOptions) relaySession

	mu      sync.Mutex
	op      chan struct{} // the lifecycle slot (beginOp): non-nil while up, down or logout runs
	key     noise.PrivateKey
	prefs   prefs
	nm      *netmap.NetworkMap // current map; nil when down or before the first
	applied map[pubkey.Node]appliedPeer
	cc      *client.Client
	ccStop  context.CancelFunc
	ccDone  chan struct{}
	health  healthSet // the node's problems (health.go)
	state   string
	login   login // a sign-in in progress (interactive.go)

	expiryTimer clock.Timer    // re-applies the map when a peer expires
	drop        dropState      // file drop (drop.go)
	dns         magicDNS       // the node's resolver (dns.go)
	relay       relayState     // the relay client (paths.go)
	peerRelay   peerRelayState // this node's own peer relay (peerrelay.go)
	obs         observability  // metrics, captures, recent logs (metrics.go)
	filter      filterState    // the engine's packet filter (filter.go)
	routes      routeState     // subnet routes and exit nodes (routes.go)
	us          userspace      // userspace mode's netstack and proxies (userspace.go)

	// pm keeps the gateway's mapping of our port (portmap.go); nil when
	// off. Read without d.mu: endpoints runs both with and without it.
	pm atomic.Pointer[portmap.Client]
}

// New checks cfg and fills in defaults; Run does the work.
func New(cfg Config) (*Daemon, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.Socket == "" {
		cfg.Socket = localapi.DefaultSocket
	}
	if cfg.TUN == "" {
		cfg.TUN = DefaultTUN
	}
	if err := uapi.CheckIfname(cfg.TUN); err != nil {
		return nil, fmt.Errorf("--tun: %w", err)
	}
	if cfg.MTU == 0 {
		cfg.MTU = device.DefaultMTU
	}
	if cfg.MTU < 1280 || cfg.MTU > 65535-80 {
		return nil, fmt.Errorf("--mtu %d: must be between 1280 and 65455", cfg.MTU)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !cfg.Userspace && (cfg.SOCKS5 != "" || cfg.HTTPProxy != "" || cfg.ForwardInbound) {
		return nil, errors.New("--socks5, --http-proxy and --forward-inbound need --userspace")
	}
	for flag, addr := range map[string]string{"--socks5": cfg.SOCKS5, "--http-proxy": cfg.HTTPProxy} {
		if addr != "" {
			if err := checkProxyListen(flag, addr); err != nil {
				return nil, err
			}
		}
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	cfg.StateDir = abs
	d := &Daemon{cfg: cfg, clk: clock.Or(cfg.Clock), applied: map[pubkey.Node]appliedPeer{}, state: localapi.StateNoState}
	d.log = d.obs.logs.wrap(cfg.Logger) // recent lines kept for `warren debug bundle`
	d.cfg.Logger = d.log
	return d, nil
}

// Run starts the node and serves until ctx ends or the interface goes
// away. ready, if not nil, is called once the local API accepts requests.
func (d *Daemon) Run(ctx context.Context, ready func()) error {
	if err := ensureStateDir(d.cfg.StateDir); err != nil {
		return err
	}
	key, err := loadOrCreateKey(d.cfg.StateDir)
	if err != nil {
		return err
	}
	p, err := loadPrefs(d.cfg.StateDir)
	if err != nil {
		return err
	}
	d.key, d.prefs = key, p
	var usEngine *deviceEngine
	if d.cfg.Userspace && d.eng == nil {
		if usEngine, err = d.initUserspace(key); err != nil {
			return err
		}
		defer d.us.st.Close() // after the engine closed (deferred below)
	}
	if d.router == nil {
		d.router = newLinuxRouter(d.cfg)
	}
	// A daemon that died with the host resolver pointed at it left the
	// original in a backup: put it back until the node is up again.
	if err := d.router.RestoreHostResolver(); err != nil {
		d.log.Warn("restore host resolver", "err", err)
	}

	inline := false
	if usEngine != nil {
		d.eng, inline = usEngine, usEngine.inline
	}
	if d.eng == nil {
		de, err := newDeviceEngine(d.cfg, key, d.log)
		if err != nil {
			return err
		}
		d.eng, inline = de, de.inline
	}
	d.procs = newProcsGovernor(inline && !d.cfg.KeepGOMAXPROCS)
	d.log.Info("device started", "datapath", map[bool]string{true: "inline", false: "pipeline"}[inline], "procs", runtime.GOMAXPROCS(0))
	d.initMetrics()
	defer func() {
		done := make(chan struct{})
		go func() { d.eng.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.log.Error("device did not close in time")
		}
	}()
	port := d.cfg.Port
	mark := uint32(RouteMark) // the underlay socket bypasses the tunnel routes (routing.go)
	ecfg := &uapi.Config{PrivateKey: &key, ListenPort: &port, FwMark: &mark}
	if d.cfg.Userspace {
		ecfg.FwMark = nil // no tunnel routes to bypass, and no CAP_NET_ADMIN to mark with
	}
	if err := d.eng.Apply(ecfg); err != nil {
		return fmt.Errorf("configure engine: %w", err)
	}
	if err := d.router.Up(d.cfg.MTU); err != nil {
		return err
	}
	d.initRoutes()
	if err := d.eng.Up(); err != nil {
		return fmt.Errorf("bind UDP port %d: %w", port, err)
	}

	var apiDone chan error // stays nil (never ready) without a local API
	if !d.cfg.NoLocalAPI {
		ln, gid, err := localapi.Listen(d.cfg.Socket, d.cfg.SocketGroup)
		if err != nil {
			return err
		}
		d.ln = ln
		defer os.Remove(d.cfg.Socket)
		defer ln.Close()
		apiDone = make(chan error, 1)
		go func() {
			apiDone <- localapi.Serve(ln, d, gid, d.log)
		}()
	}
	mctx, mstop := context.WithCancel(ctx)
	defer mstop()
	if err := d.startMetrics(mctx); err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	if d.us.st != nil {
		defer d.stopUserspace()
		if err := d.startUserspace(); err != nil {
			return err
		}
	}

	d.mu.Lock()
	switch {
	case !d.prefs.Registered:
		d.state = localapi.StateNeedsLogin
	case !d.prefs.WantRunning:
		d.state = localapi.StateStopped
	default:
		if err := d.startControlLocked(); err != nil {
			d.log.Error("cannot start control client", "err", err)
			d.setHealthLocked(healthControl, err.Error())
			d.state = localapi.StateStopped
		}
	}
	d.mu.Unlock()
	socket := d.cfg.Socket
	if d.cfg.NoLocalAPI {
		socket = "none"
	}
	d.log.Info("daemon started", "tun", d.tunName(), "port", d.eng.Port(), "socket", socket, "key", key.PublicKey().String())
	if ready != nil {
		ready()
	}

	go d.endpointLoop(ctx)
	go d.wireGuardLoop(ctx)
	stopPortMap := d.startPortMap(ctx)
	defer stopPortMap() // deletes the mapping on the gateway

	select {
	case <-ctx.Done():
	case <-d.eng.TUNGone():
		err = errors.New("the tunnel interface was removed")
	case err = <-apiDone:
		err = fmt.Errorf("local API: %w", err)
	}
	d.mu.Lock()
	d.stopControlLocked()
	d.stopDNSLocked()
	d.stopRelayLocked()
	d.stopPeerRelayLocked()
	d.clearRoutesLocked()
	d.mu.Unlock()
	d.waitRelaysClosed()
	d.stopDrop()
	if cerr := d.router.ClearAddresses(); cerr != nil {
		d.log.Debug("clear interface", "err", cerr)
	}
	return err
}

// setHealthLocked records msg for condition k ("" clears it); d.mu held.
func (d *Daemon) setHealthLocked(k healthKey, msg string) { d.health.set(k, msg) }

func (d *Daemon) mapPath() string { return filepath.Join(d.cfg.StateDir, netmapFile) }

// startControlLocked starts the control client from prefs; d.mu held.
func (d *Daemon) startControlLocked() error {
	if d.cc != nil {
		return nil
	}
	cc, err := d.controlClient(d.key)
	if err != nil {
		return err
	}
	eps := d.endpoints()
	d.eng.SetLocalEndpoints(eps)
	cc.SetEndpoints(eps)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d.cc, d.ccStop, d.ccDone = cc, cancel, done
	if d.state != localapi.StateRunning {
		d.state = localapi.StateStarting
	}
	go func() {
		defer close(done)
		err := cc.Run(ctx, d.onMap)
		if ctx.Err() != nil {
			return
		}
		d.log.Error("control client stopped", "err", err)
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.cc != cc {
			return
		}
		if pe := (*proto.Error)(nil); errors.As(err, &pe) && pe.Code == proto.CodeDiscoKeyInUse {
			// Not this node's fault to be logged out for: its disco key
			// (new each run) is another node's. A restart makes a new one.
			d.setHealthLocked(healthControl, fmt.Sprintf("the server refused this node's path-probe (disco) key (%v); restart the daemon", err))
			return
		}
		// The server refused this node for good (deleted, expired, not
		// registered): take it off the mesh until the user logs in again.
		d.cc, d.ccStop, d.ccDone = nil, nil, nil
		d.prefs.Registered = false
		if err := savePrefs(d.cfg.StateDir, d.prefs); err != nil {
			d.log.Error("save prefs", "err", err)
		}
		os.Remove(d.mapPath())
		d.clearMapLocked()
		d.state = localapi.StateNeedsLogin
		d.setHealthLocked(healthControl, fmt.Sprintf("the server refused this node (%v); run `warren up --auth-key KEY` to join again", err))
	}()
	return nil
}

// stopControlLocked stops the control client and waits for it; d.mu held
// (released while waiting).
func (d *Daemon) stopControlLocked() {
	if d.cc == nil {
		return
	}
	stop, done := d.ccStop, d.ccDone
	d.cc, d.ccStop, d.ccDone = nil, nil, nil
	stop()
	d.mu.Unlock()
	<-done
	d.mu.Lock()
}

// onMap is called by the control client with each new map.
func (d *Daemon) onMap(nm *netmap.NetworkMap) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cc == nil {
		return // stopped meanwhile
	}
	d.applyMapLocked(nm)
}

// tunName names the packet device in logs and status.
func (d *Daemon) tunName() string {
	if d.cfg.Userspace {
		return "userspace-networking"
	}
	return d.cfg.TUN
}
