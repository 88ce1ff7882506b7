// Package node puts a Warren node inside a Go program: the program joins
// the mesh under its own name, with its own tunnel addresses, and listens
// and dials there, without root, without a TUN device and without any
// change to the host's network. Services written with it are reachable
// only on the mesh, and can tell which node and user each connection
// comes from (WhoIs).
//
//	n, err := node.New(node.Options{Dir: "state", ServerURL: "https://mesh.example.com", AuthKey: key, Hostname: "hello"})
//	if err != nil { ... }
//	defer n.Close()
//	if _, err := n.Up(ctx); err != nil { ... }
//	ln, err := n.Listen("tcp", ":80")              // on the node's tunnel addresses only
//	c, err := n.Dial(ctx, "tcp", "db:5432")        // by MagicDNS name
//	who, err := n.WhoIs(ctx, conn.RemoteAddr().String())
//
// A Node is the daemon of `warren daemon --userspace` (package
// internal/daemon) run in process: the same WireGuard engine, path layer
// (direct UDP, NAT traversal, relays), control client, access policy,
// MagicDNS and file drop, on a userspace TCP/IP stack (gVisor's netstack).
// It keeps its key, registration and last network map in Options.Dir, so
// a program that starts again comes back as the same node. Several nodes
// may run in one process: each has its own state directory and UDP port,
// none serves the local API socket unless asked to, and none changes
// process-wide settings (GOMAXPROCS, signals, the default logger).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/daemon"
	"github.com/warrenmesh/warren/internal/localapi"
)

// Options configure a Node.
type Options struct {
	// Dir is the node's state directory (key, registration, last map,
	// received files), created 0700 if missing. Required, except for an
	// ephemeral node, which gets a temporary one removed by Close.
	Dir string
	// ServerURL is the coordination server (http:// or https://). Needed
	// to join; a node already registered in Dir may leave it empty.
	ServerURL string
	// AuthKey joins the node (wkey_...); used only when the node is not
	// registered yet (or registered with another server).
	AuthKey string
	// ServerKey, if set, pins the server's public key instead of taking
	// the one the server sends on first join (trust on first use).
	ServerKey string
	// Hostname asks for the node's name (its MagicDNS name is derived
	// from it); default: the program's file name.
	Hostname string
	// Logger receives the node's log; nil discards it.
	Logger *slog.Logger
	// Ephemeral nodes leave the mesh when closed (Close logs them out, so
	// the server deletes them); use an ephemeral auth key as well, so the
	// server also deletes one whose program died without Close.
	Ephemeral bool
	// Port is the UDP port of the WireGuard socket; 0 picks a free one.
	Port uint16
	// LocalAPISocket, if set, serves the daemon's local API on this unix
	// socket (0600), so that `warren status --socket PATH` and the other
	// CLI verbs can inspect the node. Default: none.
	LocalAPISocket string
}

// Node is a Warren node in this process. Its methods are safe for
// concurrent use.
type Node struct {
	opts   Options
	dir    string
	tmpDir string // removed by Close (ephemeral without Dir)
	d      *daemon.Daemon

	mu      sync.Mutex
	started bool
	closed  bool
	stop    context.CancelFunc
	runErr  chan error
	closers map[*closer]struct{} // listeners and packet conns, closed by Close
	hc      *http.Client
}

// Errors.
var (
	// ErrNotUp is returned by Listen, ListenPacket and Dial before Up
	// succeeded and after Close.
	ErrNotUp = errors.New("node: not up (call Up first)")
	// ErrClosed is returned by Up after Close.
	ErrClosed = errors.New("node: closed")
	// ErrUnknownAddr is returned (wrapped) by WhoIs for an address no
	// node of the mesh owns.
	ErrUnknownAddr = errors.New("node: no node of the mesh has this address")
	// ErrNoSuchName is returned (wrapped) by Dial for a name MagicDNS
	// does not know.
	ErrNoSuchName = daemon.ErrNoSuchName
)

// New checks opts and prepares a node; Up starts it.
func New(opts Options) (*Node, error) {
	n := &Node{opts: opts, dir: opts.Dir, closers: map[*closer]struct{}{}}
	if n.dir == "" {
		if !opts.Ephemeral {
			return nil, errors.New("node: Options.Dir: a state directory is required (except for an ephemeral node)")
		}
		tmp, err := os.MkdirTemp("", "warren-node-")
		if err != nil {
			return nil, fmt.Errorf("node: temporary state directory: %w", err)
		}
		n.dir, n.tmpDir = tmp, tmp
	}
	if opts.Hostname == "" {
		n.opts.Hostname = filepath.Base(os.Args[0])
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d, err := daemon.New(daemon.Config{
		StateDir: n.dir, Userspace: true, Port: opts.Port, Logger: log,
		Socket: opts.LocalAPISocket, NoLocalAPI: opts.LocalAPISocket == "", KeepGOMAXPROCS: true,
	})
	if err != nil {
		n.removeTmp()
		return nil, fmt.Errorf("node: %w", err)
	}
	n.d = d
	return n, nil
}

func (n *Node) removeTmp() {
	if n.tmpDir != "" {
		os.RemoveAll(n.tmpDir)
	}
}

// start runs the daemon once, until Close.
func (n *Node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if n.started {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, runErr := make(chan struct{}), make(chan error, 1)
	go func() { runErr <- n.d.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-runErr:
		cancel()
		return fmt.Errorf("node: start: %w", err)
	}
	n.started, n.stop, n.runErr = true, cancel, runErr
	return nil
}

// Up starts the node, joins the mesh if it is not registered yet (with
// Options.AuthKey), and waits until it has its network map, or until ctx
// ends. A node registered in its state directory comes back without an
// auth key.
func (n *Node) Up(ctx context.Context) (*Status, error) {
	if err := n.start(); err != nil {
		return nil, err
	}
	st := n.d.Status()
	req := localapi.UpRequest{}
	if st.BackendState == localapi.StateNeedsLogin || (n.opts.ServerURL != "" && n.opts.ServerURL != st.ServerURL && n.opts.AuthKey != "") {
		req = localapi.UpRequest{ServerURL: n.opts.ServerURL, AuthKey: n.opts.AuthKey, ServerKey: n.opts.ServerKey, Hostname: n.opts.Hostname}
	}
	if _, err := n.d.Up(ctx, req); err != nil {
		return nil, fmt.Errorf("node: up: %w", err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := n.d.Status()
		switch st.BackendState {
		case localapi.StateRunning:
			if st.Self != nil && len(st.Self.Addresses) > 0 {
				return n.status(st), nil
			}
		case localapi.StateNeedsLogin:
			return nil, fmt.Errorf("node: up: the server refused this node: %v", st.Health)
		}
		n.mu.Lock()
		closed := n.closed
		n.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node: up: no network map yet: %w (health: %v)", ctx.Err(), st.Health)
		case <-tick.C:
		}
	}
}

// running returns an error unless Up has started the node and it holds
// its addresses.
func (n *Node) running() error {
	n.mu.Lock()
	ok := n.started && !n.closed
	n.mu.Unlock()
	if !ok || len(n.Addrs()) == 0 {
		return ErrNotUp
	}
	return nil
}

// Addrs returns the node's tunnel addresses (IPv4 first); none before Up.
func (n *Node) Addrs() []netip.Addr {
	if n.d == nil {
		return nil
	}
	out := n.d.SelfAddrs()
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		if a.Is4() == b.Is4() {
			return 0
		}
		if a.Is4() {
			return -1
		}
		return 1
	})
	return out
}

// Close takes the node off the mesh (logging an ephemeral node out
// first), closes every listener and connection it made, and stops all of
// its goroutines. It returns when they are gone.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	started, stop, runErr, hc := n.started, n.stop, n.runErr, n.hc
	cs := make([]*closer, 0, len(n.closers))
	for c := range n.closers {
		cs = append(cs, c)
	}
	n.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	if hc != nil {
		hc.CloseIdleConnections()
	}
	var err error
	if started {
		if n.opts.Ephemeral {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if lerr := n.d.Logout(ctx); lerr != nil {
				err = fmt.Errorf("node: logout: %w", lerr)
			}
			cancel()
		}
		stop()
		if rerr := <-runErr; rerr != nil && !errors.Is(rerr, context.Canceled) {
			err = errors.Join(err, fmt.Errorf("node: %w", rerr))
		}
	}
	n.removeTmp()
	return err
}

// HTTPClient returns an HTTP client whose connections go through the
// mesh: URLs name nodes by MagicDNS name or tunnel address
// (http://web/, http://web.mesh.internal:8080/). The same client is
// returned each time; Close closes its idle connections.
func (n *Node) HTTPClient() *http.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hc == nil {
		n.hc = &http.Client{Transport: &http.Transport{
			DialContext:           n.Dial,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}}
	}
	return n.hc
}

// NodeInfo describes a node of the mesh.
type NodeInfo struct {
	Name      string       // MagicDNS label: "laptop"
	DNSName   string       // full MagicDNS name: "laptop.mesh.internal"
	User      string       // the owning user; "" for a tagged node
	Tags      []string     // "tag:NAME": a tagged node is owned by its tags
	Addresses []netip.Addr // tunnel addresses
	PublicKey string       // node key
}

// WhoIs tells which node, and so which user, owns remoteAddr ("IP:PORT"
// or "IP", e.g. a connection's RemoteAddr().String()): one of this
// node's peers, or this node itself. Only a node's own tunnel addresses
// count: the engine accepts a packet from a peer only with a source
// address the peer is allowed, so a connection from that address comes
// from that node (addresses of subnet routes behind a node are not its
// own and are not answered). ctx is for future lookups that may wait.
func (n *Node) WhoIs(ctx context.Context, remoteAddr string) (*NodeInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ip, err := parseRemote(remoteAddr)
	if err != nil {
		return nil, fmt.Errorf("node: whois %q: %w", remoteAddr, err)
	}
	o, ok := n.d.WhoIs(ip)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownAddr, ip)
	}
	info := &NodeInfo{Name: o.Node.Name, User: o.Node.User, Tags: o.Node.Tags, PublicKey: o.Node.Key.String()}
	if len(info.Tags) > 0 {
		info.User = ""
	}
	if o.Domain != "" {
		info.DNSName = o.Node.Name + "." + o.Domain
	}
	for _, a := range o.Node.Addresses {
		info.Addresses = append(info.Addresses, a.Addr())
	}
	return info, nil
}

func parseRemote(s string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), nil
	}
	return netip.Addr{}, errors.New("want IP:PORT or IP")
}

// Status is the node's view of the mesh.
type Status struct {
	// State is "NeedsLogin", "Stopped", "Starting" or "Running".
	State     string
	Self      *NodeInfo
	Peers     []PeerStatus
	Connected bool     // the control server's stream is up
	Health    []string // problems worth attention, one line each
}

// PeerStatus is a peer in a Status.
type PeerStatus struct {
	NodeInfo
	Online bool
	// Path is how packets go to the peer: "direct", "relay", "guess" or
	// "none".
	Path             string
	RxBytes, TxBytes uint64
	LastHandshake    time.Time
	// TrafficReportedAt is set for a WireGuard-only member behind
	// another node (docs/WIREGUARD.md): RxBytes and TxBytes are then its
	// traffic as that gateway reported it at this time.
	TrafficReportedAt time.Time
}

// Status returns the node's state and its peers.
func (n *Node) Status(ctx context.Context) (*Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	started := n.started && !n.closed
	n.mu.Unlock()
	if !started {
		return nil, ErrNotUp
	}
	return n.status(n.d.Status()), nil
}

func (n *Node) status(st *localapi.Status) *Status {
	out := &Status{State: st.BackendState, Connected: st.Connected, Health: st.Health}
	info := func(p *localapi.PeerStatus) NodeInfo {
		ni := NodeInfo{Name: p.Name, DNSName: p.DNSName, User: p.User, Addresses: p.Addresses, PublicKey: p.PublicKey}
		if len(p.Addresses) > 0 {
			if o, ok := n.d.WhoIs(p.Addresses[0]); ok && len(o.Node.Tags) > 0 {
				ni.Tags, ni.User = o.Node.Tags, ""
			}
		}
		return ni
	}
	if st.Self != nil && st.Self.Name != "" {
		self := info(st.Self)
		out.Self = &self
	}
	for i := range st.Peers {
		p := &st.Peers[i]
		out.Peers = append(out.Peers, PeerStatus{NodeInfo: info(p), Online: p.Online, Path: p.Path,
			RxBytes: p.RxBytes, TxBytes: p.TxBytes, LastHandshake: p.LastHandshake, TrafficReportedAt: p.TrafficReportedAt})
	}
	return out
}

// splitPort splits "host:port" with a numeric port.
func splitPort(addr string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: want a number from 0 to 65535", ps)
	}
	return host, uint16(p), nil
}
