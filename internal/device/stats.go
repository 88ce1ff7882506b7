package device

import "sync/atomic"

// Stats counts what the engine dropped, by reason, and what it did under
// load. Unauthenticated input is never answered, only counted here.
type Stats struct {
	DropInvalid        atomic.Uint64 // wrong size, unknown type, reserved bits
	DropMAC1           atomic.Uint64 // handshake with a bad MAC1
	DropNeedCookie     atomic.Uint64 // handshake without valid MAC2 under load (a cookie was sent)
	DropRateLimited    atomic.Uint64 // per-source handshake rate limit under load
	DropHandshakeQueue atomic.Uint64 // handshake queue full
	DropUnknownPeer    atomic.Uint64 // initiation from a static key we do not know
	DropHandshake      atomic.Uint64 // handshake failing authentication or out of state
	DropTimestamp      atomic.Uint64 // initiation replay (old TAI64N)
	DropFlood          atomic.Uint64 // initiations faster than one per 20 ms
	DropCookieReply    atomic.Uint64 // cookie reply forged or unexpected
	DropNoSession      atomic.Uint64 // transport for an unknown receiver index
	DropExpiredKey     atomic.Uint64 // transport on a key older than RejectAfterTime
	DropDecrypt        atomic.Uint64 // transport failing authentication
	DropReplay         atomic.Uint64 // transport counter replayed or too old
	DropSourceAddr     atomic.Uint64 // inner source not in the peer's allowed IPs
	DropBadInner       atomic.Uint64 // decrypted packet not a valid IPv4/IPv6 header
	DropNoRoute        atomic.Uint64 // TUN packet for no peer
	DropQueueFull      atomic.Uint64 // a peer's queue overflowed
	DropStaged         atomic.Uint64 // staged packet dropped (waiting too long or overflow)
	DropPolicy         atomic.Uint64 // refused by the packet filter (SetFilter)
	DropDestination    atomic.Uint64 // addressed to neither this node nor a route it forwards (SetFilter)
	CookieRepliesSent  atomic.Uint64
	// CookieRepliesTaken counts cookie replies accepted from peers under
	// load: our next handshake message to that peer carries MAC2.
	CookieRepliesTaken atomic.Uint64
	// RoamRefused counts authenticated packets (batches) that arrived
	// labelled with another peer's endpoint; the peer's endpoint stayed.
	RoamRefused    atomic.Uint64
	HandshakesSent atomic.Uint64
	HandshakesDone atomic.Uint64
}

// Dropped is the sum of all drop counters for packets received from the
// network.
func (s *Stats) Dropped() uint64 {
	return s.DropInvalid.Load() + s.DropMAC1.Load() + s.DropNeedCookie.Load() +
		s.DropRateLimited.Load() + s.DropHandshakeQueue.Load() + s.DropUnknownPeer.Load() +
		s.DropHandshake.Load() + s.DropTimestamp.Load() + s.DropFlood.Load() +
		s.DropCookieReply.Load() + s.DropNoSession.Load() + s.DropExpiredKey.Load() +
		s.DropDecrypt.Load() + s.DropReplay.Load() + s.DropSourceAddr.Load() + s.DropBadInner.Load() +
		s.DropPolicy.Load() + s.DropDestination.Load()
}
