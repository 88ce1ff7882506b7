package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/warrenmesh/warren/internal/dns"
	"github.com/warrenmesh/warren/internal/netmap"
)

// magicDNS is the node's own resolver: it answers at the map's nameserver
// addresses (100.100.100.100 and the tunnel prefix's ::53, which the
// daemon puts on the tunnel interface) for the node itself and its peers
// only, and, with --accept-dns, the host's resolver points at it. Its
// sockets are bound to the tunnel device, like file drop's: a peer's
// query must come through the engine (which checked its source), and a
// LAN host forging a peer's tunnel address reaches no socket; the node's
// own queries to those addresses still do (the kernel delivers them as
// arriving on the device that holds the address).
type magicDNS struct {
	res       *dns.Resolver
	srv       *dns.Server
	listening []netip.Addr
	allowed   atomic.Pointer[map[netip.Addr]bool]
	osSet     []string // what the host resolver was last set to (nil: not set)

	// An exit node also answers on its own tunnel addresses: its clients
	// forward their queries there (routes.go).
	exitSrv       *dns.Server
	exitListening []netip.Addr
}

// dnsAllowed answers whether a query source may use the resolver: the node
// itself (loopback, its own or the service addresses) or a peer's tunnel
// address — never an underlay address.
func (m *magicDNS) allow(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() {
		return true
	}
	set := m.allowed.Load()
	return set != nil && (*set)[a]
}

// toDNSConfig turns the map into the resolver's configuration, forwarding
// what it does not answer to upstreams (the host's original resolvers).
func toDNSConfig(nm *netmap.NetworkMap, upstreams []netip.Addr) dns.Config {
	custom := dns.Config{}
	service := map[netip.Addr]bool{}
	for _, a := range nm.DNS.Nameservers {
		service[a] = true
	}
	for _, u := range upstreams {
		if !service[u] && u != dns.ServiceIPv4 {
			custom.Upstreams = append(custom.Upstreams, netip.AddrPortFrom(u, 53))
		}
	}
	for _, r := range nm.DNS.Records {
		rec := dns.Record{Name: r.Name, Type: r.Type, TTL: r.TTL, Data: r.Value}
		if name, ok := strings.CutPrefix(r.Value, netmap.NodeRefPrefix); ok {
			rec.Data, rec.Node = "", name
		}
		custom.Records = append(custom.Records, rec)
	}
	custom.Zones = slices.Clone(nm.DNS.Zones)
	// Reverse lookups inside the tunnel ranges never leave the node: the
	// CGNAT range when the node is in it, and the node's IPv6 /48.
	cgnat := netip.MustParsePrefix("100.64.0.0/10")
	for _, p := range nm.Self.Addresses {
		switch a := p.Addr(); {
		case a.Is4() && cgnat.Contains(a):
			custom.TunnelPrefixes = append(custom.TunnelPrefixes, cgnat)
		case a.Is6():
			if pf, err := a.Prefix(48); err == nil {
				custom.TunnelPrefixes = append(custom.TunnelPrefixes, pf)
			}
		}
	}
	if len(nm.DNS.Routes) > 0 {
		custom.SplitDNS = map[string][]netip.AddrPort{}
		for _, rt := range nm.DNS.Routes {
			custom.SplitDNS[rt.Domain] = slices.Clone(rt.Resolvers)
		}
	}
	return dns.FromNetmap(nm, custom)
}

// applyDNSLocked brings the resolver in line with nm: configuration,
// listening addresses, who may query, and the host resolver; d.mu held.
func (d *Daemon) applyDNSLocked(nm *netmap.NetworkMap) {
	m := &d.dns
	ups, err := d.router.HostResolvers()
	if err != nil {
		d.log.Debug("no host resolvers to forward to", "err", err)
	}
	if d.routes.exitIP.IsValid() {
		// DNS follows the exit node: what MagicDNS does not answer goes
		// to the exit node's resolver, through the tunnel.
		ups = []netip.Addr{d.routes.exitIP}
	} else if d.routes.blocked {
		// The exit node asked for is unusable: DNS is blocked with the
		// internet traffic (fail closed), not sent to the host's
		// resolvers.
		ups = nil
	}
	cfg := toDNSConfig(nm, ups)
	if m.res == nil {
		opts := dns.Options{}
		if d.us.st != nil {
			// Resolvers on the mesh (an exit node, split DNS) are
			// reached through the netstack.
			opts.Dial = d.dnsDial
		}
		res, err := dns.NewResolver(cfg, opts)
		if err != nil {
			d.log.Error("DNS configuration refused", "err", err)
			d.setHealthLocked(healthDNS, "MagicDNS: "+err.Error())
			return
		}
		m.res = res
		d.setHealthLocked(healthDNS, "")
	} else if err := m.res.SetConfig(cfg); err != nil {
		d.log.Error("DNS configuration refused, keeping the previous one", "err", err)
		d.setHealthLocked(healthDNS, "MagicDNS: "+err.Error())
	} else {
		d.setHealthLocked(healthDNS, "")
	}

	allowed := map[netip.Addr]bool{}
	for _, a := range nm.DNS.Nameservers {
		allowed[a] = true
	}
	for _, p := range nm.Self.Addresses {
		allowed[p.Addr()] = true
	}
	for i := range nm.Peers {
		for _, p := range nm.Peers[i].Addresses {
			allowed[p.Addr()] = true
		}
	}
	m.allowed.Store(&allowed)

	if !slices.Equal(m.listening, nm.DNS.Nameservers) {
		if m.srv != nil {
			m.srv.Close()
			m.srv, m.listening = nil, nil
		}
		srv := dns.NewServer(m.res, m.allow)
		var ok []netip.Addr
		listenErr := ""
		for _, a := range nm.DNS.Nameservers {
			if err := d.router.ListenDNS(srv, netip.AddrPortFrom(a, 53)); err != nil {
				d.log.Error("MagicDNS cannot listen", "addr", a, "err", err)
				listenErr = "MagicDNS cannot listen on " + a.String() + ": " + err.Error()
				continue
			}
			ok = append(ok, a)
		}
		m.srv, m.listening = srv, slices.Clone(nm.DNS.Nameservers)
		d.setHealthLocked(healthDNSListen, listenErr)
		d.log.Debug("MagicDNS listening", "addrs", ok)
	}

	var exitAddrs []netip.Addr
	if nm.Self.IsExitNode() {
		for _, p := range nm.Self.Addresses {
			exitAddrs = append(exitAddrs, p.Addr())
		}
	}
	if !slices.Equal(m.exitListening, exitAddrs) {
		if m.exitSrv != nil {
			m.exitSrv.Close()
			m.exitSrv, m.exitListening = nil, nil
		}
		if len(exitAddrs) > 0 {
			srv := dns.NewServer(m.res, m.allow)
			for _, a := range exitAddrs {
				if err := d.router.ListenDNS(srv, netip.AddrPortFrom(a, 53)); err != nil {
					d.log.Error("exit node DNS cannot listen", "addr", a, "err", err)
				}
			}
			m.exitSrv, m.exitListening = srv, exitAddrs
		}
	}

	if d.prefs.AcceptDNS && len(m.listening) > 0 {
		want := append([]string{}, cfg.SearchDomains...)
		for _, a := range m.listening {
			want = append(want, a.String())
		}
		if !slices.Equal(m.osSet, want) {
			if err := d.router.SetHostResolver(m.listening, cfg.SearchDomains); err != nil {
				d.log.Error("configure host resolver", "err", err)
				d.setHealthLocked(healthHostDNS, err.Error())
			} else {
				m.osSet = want
				d.setHealthLocked(healthHostDNS, "")
			}
		}
	} else {
		d.restoreDNSLocked()
		d.setHealthLocked(healthHostDNS, "")
	}
}

// restoreDNSLocked puts the host resolver back if we changed it; d.mu held.
func (d *Daemon) restoreDNSLocked() {
	m := &d.dns
	if m.osSet == nil {
		return
	}
	if err := d.router.RestoreHostResolver(); err != nil {
		d.log.Error("restore host resolver", "err", err)
	}
	m.osSet = nil
}

// stopDNSLocked stops answering and restores the host resolver; d.mu held.
func (d *Daemon) stopDNSLocked() {
	m := &d.dns
	if m.srv != nil {
		m.srv.Close()
		m.srv, m.listening = nil, nil
	}
	if m.exitSrv != nil {
		m.exitSrv.Close()
		m.exitSrv, m.exitListening = nil, nil
	}
	d.restoreDNSLocked()
}
