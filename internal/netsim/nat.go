package netsim

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Mapping is how a NAT chooses the public port of an outgoing flow.
type Mapping int

const (
	// EndpointIndependent reuses one public port per private address and
	// port, whatever the destination (an "easy" NAT): what STUN reports is
	// what every peer can reach.
	EndpointIndependent Mapping = iota
	// EndpointDependent takes a new random public port for each
	// destination address and port (a "hard" NAT): what STUN reports is
	// good for the STUN server only.
	EndpointDependent
)

// Filtering is which inbound datagrams a NAT lets through a mapping.
type Filtering int

const (
	// AnyInbound lets anything in through an existing mapping
	// (endpoint-independent filtering, a "full cone").
	AnyInbound Filtering = iota
	// AddressDependent lets in datagrams from addresses the mapping has
	// sent to, from any port.
	AddressDependent
	// AddressPortDependent lets in datagrams only from an address and port
	// the mapping has sent to.
	AddressPortDependent
)

// NAT translates between a LAN of hosts with private addresses and one
// public address.
type NAT struct {
	net       *Network
	public    netip.Addr
	mapping   Mapping
	filtering Filtering
	// timeout is how long a mapping lives after its last outgoing
	// datagram (0: for ever).
	timeout time.Duration
	blocked bool
	hops    int
	// keeps: unsolicited inbound datagrams are kept as flows to the NAT
	// itself (see NATConfig.KeepsUnsolicited), by source and public port,
	// with the time of the last one.
	keeps bool
	kept  map[keptFlow]time.Time

	byPort map[uint16]*natMapping
	byFlow map[flow]*natMapping

	// Blocked counts datagrams dropped because UDP is blocked; Filtered
	// inbound ones no mapping let in (none, expired, or filtered).
	Blocked, Filtered atomic.Uint64
	// Kept counts unsolicited inbound datagrams kept as a flow to the NAT
	// itself; Diverted the LAN flows given another public port because
	// such a flow held theirs.
	Kept, Diverted atomic.Uint64
}

// UnsolicitedTimeout is how long a NAT that keeps unsolicited datagrams
// keeps their flow after the last one: Linux conntrack's timeout of a UDP
// flow that was never answered (nf_conntrack_udp_timeout).
const UnsolicitedTimeout = 30 * time.Second

// keptFlow is an unsolicited flow a NAT keeps: from a remote address to
// one of its public ports.
type keptFlow struct {
	from netip.AddrPort
	port uint16
}

// flow keys a mapping: the private source, and for endpoint-dependent
// mapping the destination.
type flow struct{ src, dst netip.AddrPort }

type natMapping struct {
	key     flow
	private netip.AddrPort
	port    uint16
	sentTo  map[netip.AddrPort]bool
	lastOut time.Time
}

// NATConfig chooses a NAT's behaviour.
type NATConfig struct {
	Mapping   Mapping
	Filtering Filtering
	// Timeout is how long a mapping lives after its last outgoing
	// datagram; 0 keeps mappings for ever.
	Timeout time.Duration
	// Hops is the number of routers between the NAT and the internet's
	// core: a datagram from one NAT to another passes the sum of their
	// Hops (0 and 0: the NATs are adjacent), each taking one from its
	// time to live (see Host.SendTTL).
	Hops int
	// KeepsUnsolicited makes the NAT behave as a Linux router doing
	// masquerade without filtering its own input: an inbound datagram no
	// mapping lets in is kept (by conntrack) as a flow from its source to
	// the router itself, for UnsolicitedTimeout after the last one; while
	// it lives, a LAN host's flow to that source cannot have the public
	// port it holds and is given another (random) one.
	KeepsUnsolicited bool
}

// NewNAT adds a NAT with public address public.
func (n *Network) NewNAT(public netip.Addr, cfg NATConfig) *NAT {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts[public] != nil || n.lan[public] != nil || n.nats[public] != nil {
		panic("netsim: address " + public.String() + " in use")
	}
	nat := &NAT{net: n, public: public, mapping: cfg.Mapping, filtering: cfg.Filtering, timeout: cfg.Timeout,
		hops: cfg.Hops, keeps: cfg.KeepsUnsolicited, kept: map[keptFlow]time.Time{},
		byPort: map[uint16]*natMapping{}, byFlow: map[flow]*natMapping{}}
	n.nats[public] = nat
	return nat
}

// Public is the NAT's public address.
func (nat *NAT) Public() netip.Addr { return nat.public }

// SetBlocked blocks (or unblocks) UDP through the NAT in both directions,
// as a firewall dropping UDP would. Mappings survive while blocked (and
// expire as usual, no traffic refreshing them).
func (nat *NAT) SetBlocked(b bool) {
	nat.net.mu.Lock()
	nat.blocked = b
	nat.net.mu.Unlock()
}

// Mappings is the number of live mappings.
func (nat *NAT) Mappings() int {
	nat.net.mu.Lock()
	defer nat.net.mu.Unlock()
	now := nat.net.clock.Now()
	live := 0
	for _, m := range nat.byPort {
		if !nat.expired(m, now) {
			live++
		}
	}
	return live
}

func (nat *NAT) expired(m *natMapping, now time.Time) bool {
	return nat.timeout > 0 && now.Sub(m.lastOut) >= nat.timeout
}

// outboundLocked translates a datagram from the private src to the public
// dst: it returns the public source, or false when it is dropped.
func (nat *NAT) outboundLocked(src, dst netip.AddrPort) (netip.AddrPort, bool) {
	if nat.blocked {
		nat.Blocked.Add(1)
		return netip.AddrPort{}, false
	}
	now := nat.net.clock.Now()
	key := flow{src: src}
	if nat.mapping == EndpointDependent {
		key.dst = dst
	}
	if d := nat.byFlow[flow{src: src, dst: dst}]; key.dst != dst && d != nil {
		if nat.expired(d, now) {
			nat.dropLocked(d)
		} else {
			key = d.key // a flow diverted to a port of its own
		}
	}
	m := nat.byFlow[key]
	if m != nil && nat.expired(m, now) {
		nat.dropLocked(m)
		m = nil
	}
	if m == nil {
		m = nat.newMappingLocked(key, src, nat.newPortLocked(src.Port(), now))
	}
	if !m.sentTo[dst] && nat.keptLocked(dst, m.port, now) {
		// Conntrack holds dst → public:port as a flow to the router: this
		// flow's reply would collide with it, so it gets another port.
		nat.Diverted.Add(1)
		m = nat.newMappingLocked(flow{src: src, dst: dst}, src, nat.randomPortLocked(now))
	}
	m.sentTo[dst] = true
	m.lastOut = now
	return netip.AddrPortFrom(nat.public, m.port), true
}

func (nat *NAT) newMappingLocked(key flow, src netip.AddrPort, port uint16) *natMapping {
	m := &natMapping{key: key, private: src, port: port, sentTo: map[netip.AddrPort]bool{}}
	nat.byFlow[key] = m
	nat.byPort[port] = m
	return m
}

// keptLocked reports whether an unsolicited flow from src to port is kept.
func (nat *NAT) keptLocked(src netip.AddrPort, port uint16, now time.Time) bool {
	t, ok := nat.kept[keptFlow{src, port}]
	return ok && now.Sub(t) < UnsolicitedTimeout
}

// keepLocked keeps (or refreshes) an unsolicited flow from src to port.
func (nat *NAT) keepLocked(src netip.AddrPort, port uint16, now time.Time) {
	if len(nat.kept) >= 4096 {
		for k, t := range nat.kept {
			if now.Sub(t) >= UnsolicitedTimeout {
				delete(nat.kept, k)
			}
		}
	}
	nat.kept[keptFlow{src, port}] = now
	nat.Kept.Add(1)
}

// newPortLocked picks a free public port: the private one when an
// endpoint-independent NAT has it free (port preservation), a random one
// otherwise. Ports of expired mappings are reclaimed.
func (nat *NAT) newPortLocked(want uint16, now time.Time) uint16 {
	free := func(p uint16) bool {
		m := nat.byPort[p]
		if m != nil && nat.expired(m, now) {
			nat.dropLocked(m)
			m = nil
		}
		return p != 0 && m == nil
	}
	if nat.mapping == EndpointIndependent && free(want) {
		return want
	}
	return nat.randomPortLocked(now)
}

// randomPortLocked picks a free random public port.
func (nat *NAT) randomPortLocked(now time.Time) uint16 {
	for {
		p := uint16(1024 + nat.net.rng.IntN(65536-1024))
		m := nat.byPort[p]
		if m != nil && nat.expired(m, now) {
			nat.dropLocked(m)
			m = nil
		}
		if m == nil {
			return p
		}
	}
}

func (nat *NAT) dropLocked(m *natMapping) {
	delete(nat.byPort, m.port)
	delete(nat.byFlow, m.key)
}

// inboundLocked looks up where a datagram from src to the public port
// goes: the private address, or false when it is dropped.
func (nat *NAT) inboundLocked(src netip.AddrPort, port uint16) (netip.AddrPort, bool) {
	if nat.blocked {
		nat.Blocked.Add(1)
		return netip.AddrPort{}, false
	}
	now := nat.net.clock.Now()
	m := nat.byPort[port]
	if m == nil || nat.expired(m, now) || !nat.lets(m, src) {
		nat.Filtered.Add(1)
		if nat.keeps {
			nat.keepLocked(src, port, now)
		}
		return netip.AddrPort{}, false
	}
	return m.private, true
}

func (nat *NAT) lets(m *natMapping, src netip.AddrPort) bool {
	switch nat.filtering {
	case AnyInbound:
		return true
	case AddressDependent:
		for to := range m.sentTo {
			if to.Addr() == src.Addr() {
				return true
			}
		}
		return false
	}
	return m.sentTo[src]
}

func (m Mapping) String() string {
	if m == EndpointDependent {
		return "endpoint-dependent"
	}
	return "endpoint-independent"
}

func (f Filtering) String() string {
	switch f {
	case AddressDependent:
		return "address-dependent"
	case AddressPortDependent:
		return "address-and-port-dependent"
	}
	return "endpoint-independent"
}
