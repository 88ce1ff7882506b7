package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/netstack"
)

// What an embedded node (package node, a userspace daemon inside another
// program) uses besides the local API's methods: its network stack, name
// resolution through MagicDNS, and who owns a tunnel address.

// Netstack is the userspace network stack; nil outside userspace mode and
// before Run created it.
func (d *Daemon) Netstack() *netstack.Stack { return d.us.st }

// Routable reports whether ip is this node's or some peer routes it.
func (d *Daemon) Routable(ip netip.Addr) bool { return d.routable(ip.Unmap()) }

// ErrNoSuchName is returned (wrapped) by LookupMesh for a name MagicDNS
// does not know.
var ErrNoSuchName = errors.New("no such name on the mesh")

// LookupMesh turns host into addresses: an IP literal as it is; a name
// through MagicDNS (a bare name is a node's name in the mesh's domain),
// IPv4 addresses first.
func (d *Daemon) LookupMesh(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	d.mu.Lock()
	res, nm := d.dns.res, d.nm
	d.mu.Unlock()
	if res == nil || nm == nil {
		return nil, errors.New("this node is not on the mesh")
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "" {
		return nil, errors.New("no name given")
	}
	if !strings.Contains(name, ".") && nm.Domain != "" {
		name += "." + nm.Domain // a bare name is a node's (never asked upstream)
	}
	var out []netip.Addr
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		msg := res.Resolve(ctx, mdns.Question{Name: mdns.Fqdn(name), Qtype: qt, Qclass: mdns.ClassINET})
		if msg == nil {
			continue
		}
		for _, rr := range msg.Answer {
			switch rr := rr.(type) {
			case *mdns.A:
				if ip, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					out = append(out, ip)
				}
			case *mdns.AAAA:
				if ip, ok := netip.AddrFromSlice(rr.AAAA); ok {
					out = append(out, ip.Unmap())
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchName, host)
	}
	return out, nil
}

// Owner is a node of the map that owns a tunnel address (WhoIs).
type Owner struct {
	Node   netmap.Node // a copy
	Domain string      // the mesh's MagicDNS domain
	Self   bool        // the address is this node's own
}

// WhoIs finds the node whose own tunnel address ip is: this node, or a
// current peer (not expired). Only a node's own addresses count, not the
// subnet routes behind it: the engine checks that a packet from a peer
// carries one of the addresses the peer is allowed, so a connection from
// a peer's own address comes from that peer.
func (d *Daemon) WhoIs(ip netip.Addr) (Owner, bool) {
	ip = ip.Unmap()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nm == nil {
		return Owner{}, false
	}
	for _, a := range d.nm.Self.Addresses {
		if a.Addr() == ip {
			return Owner{Node: d.nm.Self.Clone(), Domain: d.nm.Domain, Self: true}, true
		}
	}
	self, now := d.nodeKey(), time.Now()
	for i := range d.nm.Peers {
		p := &d.nm.Peers[i]
		if !usable(p, self, now) {
			continue
		}
		for _, a := range p.Addresses {
			if a.Addr() == ip {
				return Owner{Node: p.Clone(), Domain: d.nm.Domain}, true
			}
		}
	}
	return Owner{}, false
}

// SelfAddrs are the node's tunnel addresses while it runs on a map (none
// otherwise); cheaper than Status, for each Listen and Dial.
func (d *Daemon) SelfAddrs() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nm == nil || d.state != localapi.StateRunning {
		return nil
	}
	out := make([]netip.Addr, 0, len(d.nm.Self.Addresses))
	for _, a := range d.nm.Self.Addresses {
		out = append(out, a.Addr())
	}
	return out
}
