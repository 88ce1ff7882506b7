package magicsock

import (
	"net/netip"
	"time"
)

// Opening NATs that keep unsolicited datagrams (see docs/NAT.md).
//
// A Linux router doing masquerade without filtering its own input keeps a
// datagram that arrives before it has a mapping for its flow as a flow to
// the router itself (conntrack, for 30 s after the last one); its node's
// own flow towards that source then collides with it and is given another
// port, which the peer never learns. Two such routers stay on the relay
// for ever if each side's first probe reaches the other's router first.
//
// So the first datagram of a flow that reaches the peer's NAT must come
// from the side whose NAT the peer has already opened. Before the peer is
// known to have opened its NAT towards an address, the layer probes that
// address with a short time to live (openTTL): enough to pass its own NAT,
// which then has the mapping, not enough to reach the peer's NAT when at
// least one router lies between the two. Right after, it asks the peer
// through the relay to probe back (call me maybe); the peer's probes (full
// time to live) find our NAT open, and our answers find the peer's NAT
// opened by its own probes. Full probes go out once the peer has shown
// that its NAT has a mapping towards us: a datagram from the address, a
// call from the peer (it opened before calling), or our call a while ago
// (its answering probes opened its NAT).
//
// Without a relay (nobody to ask), with a transport that cannot set the
// time to live, or when the last call could not be sent, the layer probes
// with a full time to live as before: through NATs that filter their
// input that works from either side, and there is no way to sequence.

const (
	// openTTL is the time to live of an opening probe: it passes the
	// node's own NAT, the first router on its way, and dies at the next.
	openTTL = 2
	// openFor is how long a sign that the peer's NAT has a mapping
	// towards us counts: well under the 30 s Linux keeps a flow that was
	// never answered, which is about as long as an idle mapping may last.
	openFor = 10 * time.Second
	// callSettle is how long after our call the peer's answering probes
	// have opened its NAT (a relay round trip and more).
	callSettle = time.Second
)

// crossesLocked reports whether a probe (or data) with a full time to
// live may go to addr now: opening is not needed or not possible, or the
// peer's NAT has a mapping towards us, so it cannot be the first datagram
// of the flow to reach it. p.mu is held.
func (p *peerEP) crossesLocked(addr netip.AddrPort, now time.Time) bool {
	if p.c.ttl == nil || p.callFailed || p.shared == nil {
		return true // nothing to sequence with: no short probes, or no call
	}
	recent := func(t time.Time) bool { return !t.IsZero() && now.Sub(t) < openFor }
	if c := p.cands[addr]; c != nil && (recent(c.lastPong) || recent(c.heard) || recent(c.pingRecv)) {
		return true
	}
	if recent(p.lastCallRecv) {
		return true
	}
	// A call that has settled: the last one, or the one before it (calls
	// repeat while the path is not direct; the engine's handshake retries
	// may keep falling just after the latest).
	settled := func(t time.Time) bool { return recent(t) && now.Sub(t) >= callSettle }
	return settled(p.calledAt) || settled(p.calledPrev)
}
