package daemon

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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmesh/warren/internal/dns"
	"github.com/warrenmesh/warren/internal/httpproxy"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/loopowner"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/netstack"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/resolvconf"
	"github.com/warrenmesh/warren/internal/socks5"
)

// Userspace mode (`warren daemon --userspace`): no TUN, no netlink, no
// nftables, no root. The engine's packet device is a gVisor netstack
// (package netstack) in which the node's addresses live; MagicDNS and
// file drop listen there; programs on the host reach the mesh through a
// SOCKS5 and an HTTP proxy that resolve names through MagicDNS and dial
// through the netstack; with --forward-inbound, TCP connections from the
// mesh to the node's addresses are forwarded to the same port on the
// host's 127.0.0.1. The engine's packet filter (the policy) applies as in
// TUN mode: it sits between the engine and the packet device.

// userspaceRouter is the Router of userspace mode: addresses go into the
// netstack; routes need nothing (the netstack sends every destination to
// the engine, which routes by allowed IPs and drops what no peer takes);
// the host's resolver and sockets are left alone.
type userspaceRouter struct {
	st *netstack.Stack
	rc *resolvconf.Manager // read only: the host's resolvers to forward to
}

func newUserspaceRouter(st *netstack.Stack, cfg Config) *userspaceRouter {
	return &userspaceRouter{st: st, rc: resolvconf.New(cfg.ResolvConf, filepath.Join(cfg.StateDir, resolvBackupFile))}
}

func (r *userspaceRouter) Up(int) error { return nil }
func (r *userspaceRouter) SetAddresses(addrs, _ []netip.Prefix) error {
	return r.st.SetAddresses(addrs)
}
func (r *userspaceRouter) ClearAddresses() error { return r.st.SetAddresses(nil) }
func (r *userspaceRouter) SetTunnelRoutes([]netip.Prefix, []netip.Prefix, bool, netip.Addr, netip.Addr) error {
	return nil
}
func (r *userspaceRouter) ClearTunnelRoutes() error { return nil }
func (r *userspaceRouter) SetForwarding(routes []netip.Prefix) error {
	if len(routes) > 0 {
		return errors.New("userspace mode cannot route for other hosts (subnet routes and exit nodes need TUN mode)")
	}
	return nil
}
func (r *userspaceRouter) Cleanup(*slog.Logger)                 {}
func (r *userspaceRouter) HostResolvers() ([]netip.Addr, error) { return r.rc.Upstreams() }
func (r *userspaceRouter) SetHostResolver([]netip.Addr, []string) error {
	return errors.New("accept-dns: userspace mode leaves the host resolver alone; programs reach mesh names through --socks5 or --http-proxy")
}
func (r *userspaceRouter) RestoreHostResolver() error                          { return nil }
func (r *userspaceRouter) SocketControl(string, string, syscall.RawConn) error { return nil }

func (r *userspaceRouter) ListenDNS(srv *dns.Server, addr netip.AddrPort) error {
	pc, err := r.st.ListenUDP(addr)
	if err != nil {
		return err
	}
	l, err := r.st.ListenTCP(addr)
	if err != nil {
		pc.Close()
		return err
	}
	return srv.Serve(pc, l)
}

// ListenTunnel listens on a tunnel address inside the netstack: only
// packets that came through the engine reach it (tunnelListener).
func (r *userspaceRouter) ListenTunnel(addr netip.AddrPort) (net.Listener, error) {
	return r.st.ListenTCP(addr)
}

// tunnelListener is a Router that listens on tunnel addresses itself (the
// userspace one); otherwise the daemon binds a host socket to the TUN.
type tunnelListener interface {
	ListenTunnel(netip.AddrPort) (net.Listener, error)
}

// userspace is what userspace mode runs besides the engine.
type userspace struct {
	st      *netstack.Stack
	socks   *socks5.Server
	http    *http.Server
	proxy   *httpproxy.Proxy
	lns     []net.Listener
	inbound connSet // --forward-inbound connections
}

// initUserspace creates the netstack, the engine on it and the userspace
// router.
func (d *Daemon) initUserspace(key noise.PrivateKey) (*deviceEngine, error) {
	st, err := netstack.New(d.cfg.MTU)
	if err != nil {
		return nil, err
	}
	de, err := newEngineOn(st.Device(), key, d.log)
	if err != nil {
		st.Close()
		return nil, err
	}
	d.us.st = st
	d.router = newUserspaceRouter(st, d.cfg)
	return de, nil
}

// checkProxyListen refuses proxy addresses other than loopback: the
// proxies reach the whole mesh with this node's rights.
func checkProxyListen(flag, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want IP:PORT on loopback (e.g. 127.0.0.1:1055)", flag, addr)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("%s %q: only a loopback address is allowed (the proxy reaches the mesh with this node's rights)", flag, addr)
	}
	return nil
}

// startUserspace starts the proxies and inbound forwarding.
func (d *Daemon) startUserspace() error {
	u := &d.us
	timeout := d.cfg.ProxyDialTimeout
	if d.cfg.SOCKS5 != "" {
		l, err := d.listenProxy(d.cfg.SOCKS5)
		if err != nil {
			return fmt.Errorf("--socks5: %w", err)
		}
		u.socks = &socks5.Server{Dial: func(ctx context.Context, r *socks5.Request) (net.Conn, error) {
			return d.dialMesh(ctx, r.Host(), r.Port)
		}, DialTimeout: timeout, Logger: d.log}
		go u.socks.Serve(l)
		d.log.Info("SOCKS5 proxy listening", "addr", l.Addr().String())
	}
	if d.cfg.HTTPProxy != "" {
		l, err := d.listenProxy(d.cfg.HTTPProxy)
		if err != nil {
			return fmt.Errorf("--http-proxy: %w", err)
		}
		u.proxy = &httpproxy.Proxy{Dial: d.dialMesh, DialTimeout: timeout, Logger: d.log}
		u.http = u.proxy.Server()
		go u.http.Serve(l)
		d.log.Info("HTTP proxy listening", "addr", l.Addr().String())
	}
	if d.cfg.ForwardInbound {
		u.st.SetInboundTCP(d.forwardInbound)
	}
	return nil
}

// listenProxy listens for a proxy on addr (loopback): only connections
// from the daemon's own user and root are served, so that on a shared
// host another user cannot reach the mesh with this node's rights.
func (d *Daemon) listenProxy(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	d.us.lns = append(d.us.lns, l)
	return d.proxyListener(l), nil
}

// proxyListener wraps a proxy's listener with the owner check.
func (d *Daemon) proxyListener(l net.Listener) net.Listener {
	return &loopowner.Listener{Listener: l, UID: os.Geteuid(), Logger: d.log}
}

// stopUserspace stops the proxies and forwarded connections.
func (d *Daemon) stopUserspace() {
	u := &d.us
	if u.st == nil {
		return
	}
	u.st.SetInboundTCP(nil)
	for _, l := range u.lns {
		l.Close()
	}
	if u.socks != nil {
		u.socks.Close()
	}
	if u.http != nil {
		u.http.Close()
		u.proxy.CloseTunnels()
	}
	u.inbound.closeAll()
}

// forwardInbound forwards a TCP connection from the mesh to the same port
// on the host's 127.0.0.1 (--forward-inbound); the mesh side is accepted
// only once the host side answered, and reset if it does not.
func (d *Daemon) forwardInbound(local, remote netip.AddrPort, accept func() (net.Conn, error), reject func()) {
	if !d.isSelfAddr(local.Addr()) {
		reject() // a service address (MagicDNS's), not the node's own
		return
	}
	var dl net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	host, err := dl.DialContext(ctx, "tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), local.Port()).String())
	cancel()
	if err != nil {
		d.log.Debug("forward inbound: host refused", "port", local.Port(), "from", remote.String(), "err", err)
		reject()
		return
	}
	mesh, err := accept()
	if err != nil {
		host.Close()
		return
	}
	if !d.us.inbound.add(host, mesh) {
		host.Close()
		mesh.Close()
		return
	}
	defer d.us.inbound.remove(host, mesh)
	defer host.Close()
	defer mesh.Close()
	socks5.Splice(mesh, host)
}

// dropDial is file drop's dialer: through the netstack in userspace mode
// (the host has no route to the mesh), nil (the host's) otherwise.
func (d *Daemon) dropDial() func(ctx context.Context, network, addr string) (net.Conn, error) {
	st := d.us.st
	if st == nil {
		return nil
	}
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return st.DialTCP(ctx, ap)
	}
}

// dnsDial opens MagicDNS's connections to upstream resolvers in
// userspace mode: through the netstack to a resolver on the mesh (the exit
// node's, a split-DNS route's on a peer), through the host's sockets to
// the others.
func (d *Daemon) dnsDial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !d.routable(ap.Addr().Unmap()) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, addr)
	}
	if network == "tcp" {
		return d.us.st.DialTCP(ctx, ap)
	}
	return d.us.st.DialUDP(ap)
}

// connSet tracks connections to cut at shutdown.
type connSet struct {
	mu     sync.Mutex
	m      map[net.Conn]struct{}
	closed bool
}

func (s *connSet) add(cs ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.m == nil {
		s.m = map[net.Conn]struct{}{}
	}
	for _, c := range cs {
		s.m[c] = struct{}{}
	}
	return true
}

func (s *connSet) remove(cs ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		delete(s.m, c)
	}
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		c.Close()
	}
}

// dialMesh connects to host:port through the netstack: host is a tunnel
// address or a name MagicDNS knows. The errors say which SOCKS5 reply
// fits.
func (d *Daemon) dialMesh(ctx context.Context, host string, port uint16) (net.Conn, error) {
	ip, err := d.resolveMesh(ctx, host)
	if err != nil {
		return nil, err
	}
	if !d.routable(ip) {
		return nil, socks5.Errorf(socks5.ReplyNetworkUnreachable, ip.String()+" is not on the mesh (no peer routes it)")
	}
	c, err := d.us.st.DialTCP(ctx, netip.AddrPortFrom(ip, port))
	if err != nil {
		if ctx.Err() != nil {
			return nil, socks5.Errorf(socks5.ReplyHostUnreachable, fmt.Sprintf("%s:%d did not answer in time (offline, or the policy does not allow it)", host, port))
		}
		if strings.Contains(err.Error(), "refused") {
			return nil, socks5.Errorf(socks5.ReplyConnectionRefused, fmt.Sprintf("%s:%d refused the connection", host, port))
		}
		return nil, err
	}
	return c, nil
}

// resolveMesh turns host into an address: an IP literal as it is, a name
// through MagicDNS (a bare node name within the mesh's domain).
func (d *Daemon) resolveMesh(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return ip.Unmap(), nil
	}
	d.mu.Lock()
	res, nm := d.dns.res, d.nm
	d.mu.Unlock()
	if res == nil || nm == nil {
		return netip.Addr{}, socks5.Errorf(socks5.ReplyHostUnreachable, "this node is not on the mesh (run `warren up`)")
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "" {
		return netip.Addr{}, socks5.Errorf(socks5.ReplyHostUnreachable, "no name given")
	}
	if !strings.Contains(name, ".") && nm.Domain != "" {
		// A bare name is a node's (never asked upstream).
		name += "." + nm.Domain
	}
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		msg := res.Resolve(ctx, mdns.Question{Name: mdns.Fqdn(name), Qtype: qt, Qclass: mdns.ClassINET})
		if msg == nil {
			continue
		}
		for _, rr := range msg.Answer {
			switch rr := rr.(type) {
			case *mdns.A:
				if ip, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					return ip, nil
				}
			case *mdns.AAAA:
				if ip, ok := netip.AddrFromSlice(rr.AAAA); ok {
					return ip.Unmap(), nil
				}
			}
		}
	}
	return netip.Addr{}, socks5.Errorf(socks5.ReplyHostUnreachable, "no such name: "+host)
}

// isSelfAddr reports whether ip is one of the node's tunnel addresses.
func (d *Daemon) isSelfAddr(ip netip.Addr) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nm == nil {
		return false
	}
	for _, p := range d.nm.Self.Addresses {
		if p.Addr() == ip {
			return true
		}
	}
	return false
}

// routable reports whether ip is this node's or some peer routes it.
func (d *Daemon) routable(ip netip.Addr) bool {
	if d.isSelfAddr(ip) {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.applied {
		for _, a := range p.allowed {
			if a.Contains(ip) {
				return true
			}
		}
	}
	return false
}

// pingUserspace is Ping in userspace mode: echo requests from the
// netstack (there is no host interface for an ICMP socket to use).
func (d *Daemon) pingUserspace(ctx context.Context, req localapi.PingRequest, peer *netmap.Node, ip netip.Addr, report func(localapi.PingResult)) error {
	for seq := 1; seq <= req.Count; seq++ {
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, req.Timeout)
		rtt, err := d.us.st.Ping(pctx, ip, uint16(seq))
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res := localapi.PingResult{Seq: seq, Peer: peer.Name, IP: ip, RTT: rtt}
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			res.Err = "timeout"
		case err != nil:
			res.Err = err.Error()
		default:
			res.Endpoint = d.pathString(peer.Key)
		}
		report(res)
		if seq < req.Count {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(start.Add(req.Interval))):
			}
		}
	}
	return nil
}

// registerNetstackMetrics adds the userspace packet device's counters to
// the metrics registry, read at scrape time.
func (d *Daemon) registerNetstackMetrics() {
	st := d.us.st.Device().Stats()
	for name, c := range map[string]struct {
		help string
		v    *atomic.Uint64
	}{
		"warren_netstack_out_packets_total":       {"Packets the userspace network stack handed to the engine (after splitting super-packets).", &st.OutPackets},
		"warren_netstack_out_super_packets_total": {"TCP super-packets of the userspace network stack split for the engine.", &st.OutSuper},
		"warren_netstack_out_dropped_total":       {"Packets of the userspace network stack dropped: they did not fit the engine's buffers.", &st.OutDropped},
		"warren_netstack_in_packets_total":        {"Packets from the engine given to the userspace network stack.", &st.InPackets},
		"warren_netstack_in_malformed_total":      {"Packets from the engine dropped: not one well-formed IP packet.", &st.InMalformed},
	} {
		v := c.v
		d.obs.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: c.help}, func() float64 { return float64(v.Load()) }))
	}
}
