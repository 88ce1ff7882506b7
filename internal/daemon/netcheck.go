package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/stun"
)

// Netcheck measures this host's connectivity: whether UDP gets out, the
// public addresses STUN servers see, whether the NAT maps one socket to
// different ports for different destinations (a "hard" NAT, which defeats
// direct paths), and the latency to every relay region.
func (d *Daemon) Netcheck(ctx context.Context) (*localapi.NetcheckReport, error) {
	d.mu.Lock()
	var regions []netmap.RelayRegion
	var peers []localapi.NetcheckPeer
	if d.nm != nil {
		regions = append(regions, d.nm.Relays...)
		for i := range d.nm.Peers {
			p := &d.nm.Peers[i]
			path := d.eng.PeerPath(p.Key)
			peers = append(peers, localapi.NetcheckPeer{Name: p.Name, Path: string(path.Kind), PathReason: string(path.Reason)})
		}
	}
	d.mu.Unlock()
	if len(regions) == 0 {
		return nil, errors.New("netcheck: no relay regions in the network map (is the node up, and does the server offer a relay?)")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	rep := &localapi.NetcheckReport{Peers: peers}
	var mu sync.Mutex
	var wg sync.WaitGroup
	// One socket per family for every STUN query, so mappings compare.
	socks := map[string]net.PacketConn{}
	for _, fam := range []string{"udp4", "udp6"} {
		lc := net.ListenConfig{Control: d.router.SocketControl} // underlay, not via an exit node (routing.go)
		if pc, err := lc.ListenPacket(ctx, fam, ":0"); err == nil {
			socks[fam] = pc
			defer pc.Close()
		}
	}
	var stunMu sync.Mutex // stun.Request reads its socket: one query at a time per socket
	for _, r := range regions {
		rr := localapi.NetcheckRegion{ID: r.ID, Code: r.Code, URL: r.URL}
		idx := len(rep.Regions)
		rep.Regions = append(rep.Regions, rr)
		wg.Add(1)
		go func() {
			// Relay latency: a TCP connection to it (not a session: that
			// would replace this node's own session with the relay).
			defer wg.Done()
			lat, err := tcpLatency(ctx, r.URL)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Regions[idx].RelayError = err.Error()
				return
			}
			rep.Regions[idx].RelayLatency = lat
		}()
		if r.STUN == "" {
			continue
		}
		host, port, err := net.SplitHostPort(r.STUN)
		if err != nil {
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			rep.Regions[idx].STUNError = err.Error()
			continue
		}
		for _, ip := range ips {
			fam := "udp4"
			if ip.Is6() && !ip.Is4In6() {
				fam = "udp6"
			}
			pc := socks[fam]
			if pc == nil {
				continue
			}
			server, err := net.ResolveUDPAddr(fam, net.JoinHostPort(ip.Unmap().String(), port))
			if err != nil {
				continue
			}
			stunMu.Lock()
			start := time.Now()
			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			mapped, err := stun.Request(sctx, pc, server)
			scancel()
			lat := time.Since(start)
			stunMu.Unlock()
			mu.Lock()
			if err != nil {
				rep.Regions[idx].STUNError = err.Error()
			} else {
				rep.Regions[idx].STUNLatency = lat
				rep.Regions[idx].Mapped = append(rep.Regions[idx].Mapped, mapped)
				if mapped.Addr().Is4() {
					rep.UDP = true
					rep.PublicIPv4 = mapped.Addr()
				} else {
					rep.UDP = true
					rep.PublicIPv6 = mapped.Addr()
				}
			}
			mu.Unlock()
		}
	}
	wg.Go(func() {
		pm := d.netcheckPortMap(ctx)
		mu.Lock()
		rep.PortMap = pm
		mu.Unlock()
	})
	wg.Wait()
	rep.MappingVaries = mappingVaries(rep.Regions)
	return rep, nil
}

// mappingVaries compares the IPv4 mappings seen by different STUN servers
// for one socket: "yes" when they differ, "no" when two or more agree,
// "unknown" with fewer than two answers.
func mappingVaries(regions []localapi.NetcheckRegion) string {
	var seen []netip.AddrPort
	for _, r := range regions {
		for _, m := range r.Mapped {
			if m.Addr().Is4() {
				seen = append(seen, m)
			}
		}
	}
	if len(seen) < 2 {
		return "unknown"
	}
	for _, m := range seen[1:] {
		if m != seen[0] {
			return "yes"
		}
	}
	return "no"
}

// tcpLatency is the time to open a TCP connection to the host of a URL.
func tcpLatency(ctx context.Context, rawURL string) (time.Duration, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	dl := net.Dialer{Control: markControl}
	start := time.Now()
	c, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return 0, err
	}
	lat := time.Since(start)
	c.Close()
	return lat, nil
}
