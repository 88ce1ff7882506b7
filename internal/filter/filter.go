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

type shard struct {
	mu    sync.Mutex
	flows map[flowKey]int64 // expiry, monotonic ns
	_     [40]byte          // keep shards on separate cache lines
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
		f.shards[i].flows = make(map[flowKey]int64, f.perShard)
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

// Record notes an outbound packet (from this node to a peer): a TCP SYN, a
// UDP packet or an ICMP echo request starts or refreshes a flow whose
// replies Allow lets in. Anything else is ignored.
func (f *Filter) Record(pkt []byte) {
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
	s.flows[k] = exp
	s.mu.Unlock()
}

// evictLocked makes room: expired flows go, and if none had, the one
// closest to expiry.
func (s *shard) evictLocked(now int64) {
	var oldest flowKey
	oldestExp := int64(1<<63 - 1)
	freed := false
	for k, exp := range s.flows {
		if exp <= now {
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
func (f *Filter) lookup(k *flowKey) bool {
	now := f.now()
	s := &f.shards[k.shard()]
	s.mu.Lock()
	exp, ok := s.flows[*k]
	if ok {
		if exp <= now {
			delete(s.flows, *k)
			ok = false
		} else {
			s.flows[*k] = now + timeout(k.proto)
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

// Allow reports whether an inbound packet (from a peer, already
// decrypted and source-checked) may be delivered.
func (f *Filter) Allow(pkt []byte) bool { return f.Check(pkt) == Accept }

// Check decides whether an inbound packet (from a peer, already
// decrypted and source-checked) may be delivered, and if not why. The
// destination is checked first (SetDestinations), so no rule and no
// recorded flow can open a destination outside this node and its
// approved routes.
func (f *Filter) Check(pkt []byte) Verdict {
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
	if f.allowRules(rs, &p) {
		return Accept
	}
	return DropPolicy
}

// allowRules applies the rules and the connection table to p.
func (f *Filter) allowRules(rs *ruleset, p *packet) bool {
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
			return f.quotedFlowRecorded(p)
		}
		return rs.allows(src, dst, p.proto, 0, false)
	}
	if p.fragment {
		return true
	}
	return rs.allows(src, dst, p.proto, 0, false)
}

// quotedFlowRecorded reports whether the packet an ICMP error quotes
// belongs to a flow this node started.
func (f *Filter) quotedFlowRecorded(outer *packet) bool {
	var q packet
	if len(outer.l4) < 8 || !parse(outer.l4[8:], &q) || q.fragment || q.src != outer.dst {
		return false
	}
	switch q.proto {
	case ProtoTCP, ProtoUDP:
		return f.lookup(&flowKey{local: q.src, remote: q.dst, lport: q.sport, rport: q.dport, proto: q.proto})
	case ProtoICMP, ProtoICMPv6:
		if isEchoRequest(q.proto, q.icmpType) {
			return f.lookup(&flowKey{local: q.src, remote: q.dst, lport: q.sport, proto: q.proto})
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
