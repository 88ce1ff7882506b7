// Package netsim is an in-memory datagram internet for tests of the path
// layer: hosts with addresses, some behind NATs whose mapping and
// filtering behaviours are chosen (RFC 4787: endpoint-independent or
// endpoint-dependent mapping; endpoint-independent, address-dependent or
// address-and-port-dependent filtering), NATs that block UDP altogether,
// NATs that keep an unsolicited datagram as a flow to themselves and so
// give their host's own flow to its source another port (a Linux router
// doing masquerade without filtering its input), routers between NATs
// that a datagram's time to live must last through (Host.SendTTL), and
// STUN responders. Each Host is a conn.Transport, so a magicsock.Conn
// (or the engine itself) runs over it unchanged.
//
// Delivery is immediate and in order (no latency, no loss but what a NAT
// or a full queue drops, each counted). NAT mappings expire on the
// network's clock, so a test driving a clock.Fake decides when. Idle
// reports when every datagram sent has been received and its reader has
// come back for more: a test advancing virtual time waits for Idle between
// steps, and virtual time stands still while the hosts' goroutines act.
package netsim

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/stun"
)

// Network is the virtual internet: public addresses route to hosts on it
// directly, to NATs, or to STUN responders.
type Network struct {
	clock clock.Clock

	mu    sync.Mutex
	hosts map[netip.Addr]*Host // hosts on the internet, by address
	nats  map[netip.Addr]*NAT  // NATs, by public address
	lan   map[netip.Addr]*Host // hosts behind a NAT, by private address
	stun  map[netip.AddrPort]bool
	rng   *rand.Rand
	tap   func(src, dst netip.AddrPort, b []byte)

	// inflight counts datagrams queued to a socket or handed to its reader
	// who has not yet come back for more.
	inflight atomic.Int64

	// NoRoute counts datagrams to an address nothing has (or to a port no
	// socket is bound to); QueueFull those dropped at a full socket queue;
	// TimeExceeded those whose time to live ran out on the way.
	NoRoute, QueueFull, TimeExceeded atomic.Uint64
}

// New returns an empty network running on c (nil: the real clock). Port
// choices of NATs are random from a fixed seed, the same in every run.
func New(c clock.Clock) *Network {
	return &Network{clock: clock.Or(c), hosts: map[netip.Addr]*Host{}, nats: map[netip.Addr]*NAT{},
		lan: map[netip.Addr]*Host{}, stun: map[netip.AddrPort]bool{}, rng: rand.New(rand.NewPCG(17, 4787))}
}

// Idle reports whether no datagram is on its way: every one sent was
// dropped, or received by a reader who has since asked for more.
func (n *Network) Idle() bool { return n.inflight.Load() == 0 }

// SetTap sets a function called with every datagram delivered to a
// socket: its source as the receiver sees it, the receiving socket's
// address, and its bytes (not to be kept or changed). It runs with the
// network locked: it must not call into the network.
func (n *Network) SetTap(f func(src, dst netip.AddrPort, b []byte)) {
	n.mu.Lock()
	n.tap = f
	n.mu.Unlock()
}

// AddSTUN makes the network answer STUN Binding requests sent to addr
// with the address they came from (as the internet sees it).
func (n *Network) AddSTUN(addr netip.AddrPort) {
	n.mu.Lock()
	n.stun[addr] = true
	n.mu.Unlock()
}

// NewHost adds a host with address addr on the internet (nat nil) or
// behind nat (addr is then private to the NAT's LAN).
func (n *Network) NewHost(addr netip.Addr, nat *NAT) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts[addr] != nil || n.lan[addr] != nil || n.nats[addr] != nil {
		panic("netsim: address " + addr.String() + " in use")
	}
	h := &Host{net: n, addr: addr, nat: nat, eps: map[netip.AddrPort]*Endpoint{}, nextPort: 40000}
	if nat != nil {
		n.lan[addr] = h
	} else {
		n.hosts[addr] = h
	}
	return h
}

// MoveHost moves h to the address addr, behind nat (nil: on the
// internet), as a laptop moving to another network does: its socket stays
// open on the same port, what it sends now leaves from there, and
// mappings of the old NAT no longer reach it.
func (n *Network) MoveHost(h *Host, addr netip.Addr, nat *NAT) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts[addr] != nil || n.lan[addr] != nil || n.nats[addr] != nil {
		panic("netsim: address " + addr.String() + " in use")
	}
	if h.nat != nil {
		delete(n.lan, h.addr)
	} else {
		delete(n.hosts, h.addr)
	}
	h.addr, h.nat = addr, nat
	if nat != nil {
		n.lan[addr] = h
	} else {
		n.hosts[addr] = h
	}
}

// DefaultTTL is the time to live of datagrams sent with Send.
const DefaultTTL = 64

// route carries one datagram from src, sent by host from (nil: the
// network itself, a STUN answer) to dst, with time to live ttl: each NAT
// forwarding it and each router between the NATs (their Hops) takes one,
// and one that reaches 0 on the way is dropped and counted in
// TimeExceeded. A NAT creates a mapping only for a datagram it forwards,
// and receives one for itself (keeping it, see KeepsUnsolicited) with any
// ttl left. n.mu is held.
func (n *Network) route(from *Host, src, dst netip.AddrPort, pkt []byte, ttl int) {
	var srcNAT *NAT
	if from != nil && from.nat != nil {
		nat := from.nat
		if h := n.lan[dst.Addr()]; h != nil && h.nat == nat {
			h.deliverLocked(src, dst.Port(), pkt) // same LAN: no translation
			return
		}
		if ttl < 2 {
			n.TimeExceeded.Add(1)
			return
		}
		ttl--
		var ok bool
		if src, ok = nat.outboundLocked(src, dst); !ok {
			return
		}
		srcNAT = nat
	}
	dstNAT := n.nats[dst.Addr()]
	hops := hopsOf(srcNAT) + hopsOf(dstNAT)
	if ttl-hops < 1 {
		n.TimeExceeded.Add(1)
		return
	}
	ttl -= hops
	switch {
	case n.stun[dst]:
		if m, err := stun.Parse(pkt); err == nil && m.IsBindingRequest() {
			n.route(nil, dst, src, stun.AppendResponse(nil, m.TxID, src), DefaultTTL)
		}
	case n.hosts[dst.Addr()] != nil:
		n.hosts[dst.Addr()].deliverLocked(src, dst.Port(), pkt)
	case dstNAT != nil:
		if to, ok := dstNAT.inboundLocked(src, dst.Port()); ok {
			if ttl < 2 {
				n.TimeExceeded.Add(1)
			} else if h := n.lan[to.Addr()]; h != nil && h.nat == dstNAT {
				h.deliverLocked(src, to.Port(), pkt)
			} else {
				n.NoRoute.Add(1) // the host left the NAT's LAN
			}
		}
	default:
		n.NoRoute.Add(1)
	}
}

func hopsOf(nat *NAT) int {
	if nat == nil {
		return 0
	}
	return nat.hops
}
