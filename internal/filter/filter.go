package filter

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Idle timeouts of recorded flows: each packet of the flow (either way)
// pushes its expiry this far ahead.
const (
	TCPTimeout   = 30 * time.Minute
	UDPTimeout   = 2 * time.Minute
	ICMPTimeout  = 30 * time.Second
	DefaultFlows = 16384 // default bound of the connection table
	nShards      = 64
)

// Filter is one node's inbound filter. The zero value is not usable;
// create it with New.
type Filter struct {
	rules    atomic.Pointer[ruleset]
	mu       sync.Mutex // serialises Set, SetNoPolicy and SetDestinations
	base     *ruleset   // the compiled rules, without open and dsts
	open     bool       // no policy (SetNoPolicy)
	dsts     *dstSet    // nil: destinations not checked
	shards   [nShards]shard
	perShard int
	now      func() int64 // monotonic nanoseconds
}

type flowKey struct {
	local, remote [16]byte
	lport, rport  uint16
	proto         uint8
}

// flow is a recorded flow: when it expires and which peer it was sent to.
type flow struct {
	exp  int64  // monotonic ns
	peer uint64 // RecordTo's peer; 0: unknown
}

type shard struct {
	mu    sync.Mutex
	flows map[flowKey]flow
	_     [40]byte // keep shards on separate cache lines
}

var epoch = time.Now()

func monotonic() int64 { return int64(time.Since(epoch)) }

// New returns a filter that allows nothing in (Set installs rules) and
// remembers up to maxFlows outbound flows (DefaultFlows if <= 0).
func New(maxFlows int) *Filter {
	if maxFlows <= 0 {
		maxFlows = DefaultFlows
	}
	f := &Filter{perShard: max(1, maxFlows/nShards), now: monotonic}
	for i := range f.shards {
		f.shards[i].flows = make(map[flowKey]flow, f.perShard)
	}
	f.base = &ruleset{}
	f.rules.Store(f.base)
	return f
}

// Set replaces the rules (nil: allow nothing in); recorded flows stay.
func (f *Filter) Set(s *Spec) {
	if s == nil {
		s = &Spec{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.base, f.open = compile(s), false
	f.storeLocked()
}

// SetNoPolicy makes the filter allow every packet (to a permitted
// destination, see SetDestinations): the deployment has no policy. Record
// then keeps nothing; Set brings rules back.
func (f *Filter) SetNoPolicy() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.base, f.open = &ruleset{}, true
	f.storeLocked()
}

// SetDestinations replaces where peers' packets may go. Until it is
// first called the filter checks no destinations.
func (f *Filter) SetDestinations(d Destinations) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dsts = compileDsts(d)
	f.storeLocked()
}

func (f *Filter) storeLocked() {
	rs := *f.base // shares the rules, which are never modified
	rs.open, rs.dsts = f.open, f.dsts
	f.rules.Store(&rs)
}

func (k *flowKey) shard() uint32 {
	h := uint32(2166136261)
	for _, b := range k.remote[12:] {
		h = (h ^ uint32(b)) * 16777619
	}
	h ^= uint32(k.lport)<<16 | uint32(k.rport)
	h *= 16777619
	h ^= uint32(k.proto)
	return (h ^ h>>15) % nShards
}

func timeout(proto uint8) int64 {
	switch proto {
	case ProtoTCP:
		return int64(TCPTimeout)
	case ProtoUDP:
		return int64(UDPTimeout)
	}
	return int64(ICMPTimeout)
}

// Record is RecordTo with peer 0 (unknown).
func (f *Filter) Record(pkt []byte) { f.RecordTo(pkt, 0) }

// RecordTo notes an outbound packet sent to the peer with identity peer
// (any number unique per peer, chosen by the caller): a TCP SYN, a UDP
// packet or an ICMP echo request starts or refreshes a flow whose replies
// Check lets in, and whose ICMP errors CheckFrom lets in from that peer
// only. Anything else is ignored.
func (f *Filter) RecordTo(pkt []byte, peer uint64) {
	if f.rules.Load().open {
		return // no policy: every reply passes anyway
	}
	var p packet
	if !parse(pkt, &p) || p.fragment {
		return
	}
	var k flowKey
	switch p.proto {
	case ProtoTCP:
		if p.tcpFlags&(tcpSYN|tcpACK) != tcpSYN {
			return
		}
		k = flowKey{local: p.src, remote: p.dst, lport: p.sport, rport: p.dport, proto: p.proto}
	case ProtoUDP:
		k = flowKey{local: p.src, remote: p.dst, lport: p.sport, rport: p.dport, proto: p.proto}
	case ProtoICMP, ProtoICMPv6:
		if !isEchoRequest(p.proto, p.icmpType) {
			return
		}
		k = flowKey{local: p.src, remote: p.dst, lport: p.sport, proto: p.proto}
	default:
		return
	}
	now := f.now()
	exp := now + timeout(p.proto)
	s := &f.shards[k.shard()]
	s.mu.Lock()
	if _, ok := s.flows[k]; !ok && len(s.flows) >= f.perShard {
		s.evictLocked(now)
	}
	s.flows[k] = flow{exp: exp, peer: peer}
	s.mu.Unlock()
}

// evictLocked makes room: expired flows go, and if none had, the one
// closest to expiry.
func (s *shard) evictLocked(now int64) {
	var oldest flowKey
	oldestExp := int64(1<<63 - 1)
	freed := false
	for k, fl := range s.flows {
		if exp := fl.exp; exp <= now {
			delete(s.flows, k)
			freed = true
		} else if exp < oldestExp {
			oldest, oldestExp = k, exp
		}
	}
	if !freed {
		delete(s.flows, oldest)
	}
}

// lookup reports whether flow k is recorded and live, and refreshes it.
func (f *Filter) lookup(k *flowKey) bool { return f.lookupFrom(k, 0, false) }

// lookupFrom is lookup; with checkPeer, only a flow sent to peer counts.
func (f *Filter) lookupFrom(k *flowKey, peer uint64, checkPeer bool) bool {
	now := f.now()
	s := &f.shards[k.shard()]
	s.mu.Lock()
	fl, ok := s.flows[*k]
	if ok {
		if fl.exp <= now {
			delete(s.flows, *k)
			ok = false
		} else if checkPeer && fl.peer != peer {
			ok = false
		} else {
			fl.exp = now + timeout(k.proto)
			s.flows[*k] = fl
		}
	}
	s.mu.Unlock()
	return ok
}

// Verdict is what Check decides about a packet.
type Verdict uint8

const (
	Accept          Verdict = iota
	DropPolicy              // no rule allows it, and it is no reply to a flow this node started
	DropDestination         // addressed to neither this node nor a route it may forward to
)

// Allow reports whether an inbound packet may be delivered: Check is
// Accept.
func (f *Filter) Allow(pkt []byte) bool { return f.CheckFrom(pkt, 0) == Accept }

// AllowFrom reports whether CheckFrom accepts the packet from peer.
func (f *Filter) AllowFrom(pkt []byte, peer uint64) bool { return f.CheckFrom(pkt, peer) == Accept }

// Check is CheckFrom with peer 0 (unknown): ICMP errors pass only for
// flows recorded with peer 0.
func (f *Filter) Check(pkt []byte) Verdict { return f.CheckFrom(pkt, 0) }

// CheckFrom decides whether an inbound packet from the peer with identity
// peer (as given to RecordTo; the packet already decrypted and
// source-checked against that peer's allowed IPs) may be delivered, and if
// not why. The destination is checked first (SetDestinations), so no rule
// and no recorded flow can open a destination outside this node and its
// approved routes. An ICMP error quoting a recorded flow passes only from
// the peer that flow was sent to: its outer source then lies in that
// peer's allowed IPs (the destination itself, or a router behind an exit
// node or subnet router), so no other member can inject errors into
// someone else's flow.
func (f *Filter) CheckFrom(pkt []byte, peer uint64) Verdict {
	rs := f.rules.Load()
	if rs.open {
		if rs.dsts == nil {
			return Accept
		}
		if dst, ok := dstOf(pkt); !ok || !rs.dsts.permits(dst) {
			return DropDestination
		}
		return Accept
	}
	var p packet
	if !parse(pkt, &p) {
		return DropPolicy
	}
	if rs.dsts != nil && !rs.dsts.permits(p.dstAddr()) {
		return DropDestination
	}
	if f.allowRules(rs, &p, peer) {
		return Accept
	}
	return DropPolicy
}

// allowRules applies the rules and the connection table to p.
func (f *Filter) allowRules(rs *ruleset, p *packet, peer uint64) bool {
	src := p.srcAddr()
	var dst netip.Addr
	if rs.hasDst {
		dst = p.dstAddr()
	}
	switch p.proto {
	case ProtoTCP, ProtoUDP:
		if p.fragment {
			return true
		}
		if rs.allows(src, dst, p.proto, p.dport, true) {
			return true
		}
		return f.lookup(&flowKey{local: p.dst, remote: p.src, lport: p.dport, rport: p.sport, proto: p.proto})
	case ProtoICMP, ProtoICMPv6:
		if p.fragment {
			return true
		}
		switch {
		case isEchoReply(p.proto, p.icmpType):
			return f.lookup(&flowKey{local: p.dst, remote: p.src, lport: p.sport, proto: p.proto})
		case isICMPError(p.proto, p.icmpType):
			if rs.allows(src, dst, p.proto, 0, false) {
				return true
			}
			return f.quotedFlowRecorded(p, peer)
		}
		return rs.allows(src, dst, p.proto, 0, false)
	}
	if p.fragment {
		return true
	}
	return rs.allows(src, dst, p.proto, 0, false)
}

// quotedFlowRecorded reports whether the packet an ICMP error quotes
// belongs to a flow this node started towards peer.
func (f *Filter) quotedFlowRecorded(outer *packet, peer uint64) bool {
	var q packet
	if len(outer.l4) < 8 || !parse(outer.l4[8:], &q) || q.fragment || q.src != outer.dst {
		return false
	}
	switch q.proto {
	case ProtoTCP, ProtoUDP:
		return f.lookupFrom(&flowKey{local: q.src, remote: q.dst, lport: q.sport, rport: q.dport, proto: q.proto}, peer, true)
	case ProtoICMP, ProtoICMPv6:
		if isEchoRequest(q.proto, q.icmpType) {
			return f.lookupFrom(&flowKey{local: q.src, remote: q.dst, lport: q.sport, proto: q.proto}, peer, true)
		}
	}
	return false
}

// Flows is the number of flows in the table (expired ones included until
// they are swept).
func (f *Filter) Flows() int {
	n := 0
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		n += len(s.flows)
		s.mu.Unlock()
	}
	return n
}
