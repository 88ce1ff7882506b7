package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/warrenmesh/warren/internal/dnsname"
	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
)

// resolvePeer finds a peer by name, DNS name, tunnel address or public key,
// and the tunnel address to ping (the one named, else IPv4 first).
func resolvePeer(nm *netmap.NetworkMap, q string) (*netmap.Node, netip.Addr, error) {
	raw := strings.TrimSpace(q)
	q = dnsname.Normalize(raw)
	if q == "" {
		return nil, netip.Addr{}, errors.New("no peer given")
	}
	ip, ipErr := netip.ParseAddr(q)
	for i := range nm.Peers {
		p := &nm.Peers[i]
		if ipErr == nil {
			for _, a := range p.Addresses {
				if a.Addr() == ip {
					return p, ip, nil
				}
			}
			continue
		}
		if p.Name == q || (nm.Domain != "" && p.Name+"."+nm.Domain == q) || p.Key.String() == raw {
			for _, a := range p.Addresses {
				if a.Addr().Is4() {
					return p, a.Addr(), nil
				}
			}
			if len(p.Addresses) > 0 {
				return p, p.Addresses[0].Addr(), nil
			}
			return nil, netip.Addr{}, fmt.Errorf("peer %s has no tunnel address", p.Name)
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("no peer %q in the network map (see `warren status`)", q)
}

// Ping sends ICMP echo requests to a peer's tunnel address: they travel
// through the tunnel like any traffic, and the peer's own kernel answers.
func (d *Daemon) Ping(ctx context.Context, req localapi.PingRequest, report func(localapi.PingResult)) error {
	d.mu.Lock()
	nm := d.nm
	d.mu.Unlock()
	if nm == nil {
		return errors.New("this node is not on the mesh (run `warren up`)")
	}
	peer, ip, err := resolvePeer(nm, req.Peer)
	if err != nil {
		return err
	}
	if req.Count <= 0 {
		req.Count = 4
	}
	if req.Count > 100000 {
		return errors.New("--count: at most 100000")
	}
	if req.Interval <= 0 {
		req.Interval = time.Second
	}
	if req.Interval < 10*time.Millisecond {
		req.Interval = 10 * time.Millisecond
	}
	if req.Timeout <= 0 {
		req.Timeout = 2 * time.Second
	}

	if d.us.st != nil {
		return d.pingUserspace(ctx, req, peer, ip, report)
	}

	network, proto, typ, reply := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho), icmp.Type(ipv4.ICMPTypeEchoReply)
	if ip.Is6() {
		network, proto, typ, reply = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, "")
	if err != nil {
		return fmt.Errorf("ping: open ICMP socket: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()

	id := int(rand.N(uint16(0xffff))) + 1
	payload := []byte("warren ping")
	dst := &net.IPAddr{IP: ip.AsSlice()}
	buf := make([]byte, 1500)
	for seq := 1; seq <= req.Count; seq++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		start := time.Now()
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		res := localapi.PingResult{Seq: seq, Peer: peer.Name, IP: ip}
		if _, err := c.WriteTo(b, dst); err != nil {
			res.Err = err.Error()
			report(res)
		} else {
			res.RTT, res.Err = waitEcho(c, buf, reply, proto, id, seq, ip, start, start.Add(req.Timeout))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res.Endpoint = d.pathString(peer.Key)
			report(res)
		}
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

// waitEcho reads until the matching echo reply arrives or the deadline.
func waitEcho(c *icmp.PacketConn, buf []byte, want icmp.Type, proto, id, seq int, from netip.Addr, sent, deadline time.Time) (time.Duration, string) {
	c.SetReadDeadline(deadline)
	for {
		n, src, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, "timeout"
			}
			return 0, err.Error()
		}
		ipa, ok := src.(*net.IPAddr)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(ipa.IP)
		if !ok || a.Unmap() != from {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != want {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
			return time.Since(sent), ""
		}
	}
}
