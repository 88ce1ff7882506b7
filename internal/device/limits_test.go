package device

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/ratelimit"
	"github.com/warrenmesh/warren/internal/tai64n"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/wire"
)

// Tests of the protocol's limits: message counters, replayed and flooded
// initiations, forged cookie replies, cookies and rate limits under load,
// and key confirmation. They share the fake clock of timers_test.go.

func listenUDP(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(n *node) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.dev.Port())
}

func writeUDP(t *testing.T, c *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// readUDP returns the next datagram on c, or nil after d.
func readUDP(c *net.UDPConn, d time.Duration) []byte {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// craftInitiation builds a valid initiation from priv to the holder of to,
// stamped ts, with MAC1 and (if gen holds a cookie) MAC2.
func craftInitiation(t *testing.T, priv noise.PrivateKey, to noise.PublicKey, ts time.Time, gen *noise.CookieGenerator, now time.Time) []byte {
	t.Helper()
	s := noise.NewStatic(priv)
	h := noise.Handshake{RemoteStatic: to}
	if !h.Precompute(s) {
		t.Fatal("low-order key")
	}
	var m wire.Initiation
	if err := s.CreateInitiation(&h, randUint32()|1, tai64n.FromTime(ts), &m); err != nil {
		t.Fatal(err)
	}
	out := m.Marshal(make([]byte, wire.InitiationSize))
	gen.AddMACs(out, now)
	return out
}

func mac2(msg []byte) []byte { return msg[len(msg)-wire.MacSize:] }

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func stagedElem(pkt []byte) *elem {
	e := getElem()
	n := copy(e.buf[MessageTransportStart:], pkt)
	e.pkt = e.buf[MessageTransportStart : MessageTransportStart+n]
	return e
}

// 9. At RekeyAfterMessages the initiator starts a handshake while still
// sending; at RejectAfterMessages the key sends nothing more, and what is
// left waits for the next session.
func TestMessageLimits(t *testing.T) {
	clock, a, b := newTimedPair(t)
	kp0 := handshake(t, clock, a, b)
	pa := peerOf(a, b)
	log := recordSends(a, clock)
	clock.Advance(RekeyTimeout + time.Second) // an initiation may be sent again

	// b's response is lost at first, so that the packet cannot race the
	// new session: it must go out on the old key.
	b.tr.cut.Store(true)
	kp0.sendNonce.Store(RekeyAfterMessages)
	ping(t, a, b, false)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Fatalf("a sent %d initiations at RekeyAfterMessages, want 2", n)
	}
	data := log.since(0, isData)
	if len(data) != 1 || data[0].receiver != kp0.remoteIndex || data[0].counter != RekeyAfterMessages {
		t.Fatalf("data at RekeyAfterMessages not sent on the old key: %+v", data)
	}
	settleInitiations(t, b, a)
	b.tr.cut.Store(false)
	w, ok := deadline(&pa.timers.retransmitHandshake)
	if !ok {
		t.Fatal("no retransmission armed")
	}
	clock.Advance(w.Sub(clock.Now()))
	wait.Until(t, "new session", func() bool { _, cur, _ := keypairsOf(pa); return cur != kp0 })
	_, kp1, _ := keypairsOf(pa)
	// a confirms the new session with a keepalive (counter 0); b must have
	// promoted it before a's next initiation replaces b's unconfirmed one.
	wait.Until(t, "confirmation", func() bool {
		return log.count(func(m sentMsg) bool { return m.receiver == kp1.remoteIndex }) == 1
	})
	pb := peerOf(b, a)
	wait.Until(t, "b confirmed", func() bool { _, cur, _ := keypairsOf(pb); return cur != nil && cur.localIndex == kp1.remoteIndex })

	b.tr.cut.Store(true) // the rekey started below cannot complete yet
	clock.Advance(RekeyTimeout + time.Second)
	mark := log.len()
	inits := a.tr.sent[wire.TypeInitiation].Load()
	kp1.sendNonce.Store(RejectAfterMessages - 1)
	p1, p2, p3 := tunnelPacket(a, b, "last"), tunnelPacket(a, b, "over"), tunnelPacket(a, b, "later")
	pa.stage([]*elem{stagedElem(p1), stagedElem(p2)})
	pa.flushStaged()
	expectPacket(t, b, p1) // counter RejectAfterMessages-1 is still valid
	if n := stagedLen(pa); n != 1 {
		t.Fatalf("%d packets staged, want 1", n)
	}
	if n := kp1.sendNonce.Load(); n != RejectAfterMessages {
		t.Fatalf("sendNonce = %d", n)
	}
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != inits+1 {
		t.Fatalf("a sent %d initiations near RejectAfterMessages, want 1", n-inits)
	}
	a.tun.Inbound <- p3
	wait.Until(t, "second packet staged", func() bool { return stagedLen(pa) == 2 })
	noPacket(t, b, 50*time.Millisecond)
	onKP1 := log.since(mark, func(m sentMsg) bool { return m.typ == wire.TypeTransport && m.receiver == kp1.remoteIndex })
	if len(onKP1) != 1 || onKP1[0].counter != RejectAfterMessages-1 {
		t.Fatalf("sent on the exhausted key: %+v", onKP1)
	}

	b.tr.cut.Store(false)
	for i := 0; i < 3 && stagedLen(pa) > 0; i++ {
		clock.Advance(RekeyTimeout + RekeyTimeoutJitterMax)
		wait.Poll(5*time.Second, func() bool { return stagedLen(pa) == 0 })
	}
	expectPacket(t, b, p2)
	expectPacket(t, b, p3)
	_, kp2, _ := keypairsOf(pa)
	if kp2 == kp1 {
		t.Fatal("no new session")
	}
	data = log.since(mark, isData)
	if len(data) != 3 || data[1].receiver != kp2.remoteIndex || data[2].receiver != kp2.remoteIndex {
		t.Fatalf("staged packets not sent on the new session: %+v", data)
	}
}

// The message limit applies to the responder too (as in wireguard-go and
// the kernel): only the time-based rekey is the initiator's alone.
func TestResponderRekeyAfterMessages(t *testing.T) {
	clock, a, b := newTimedPair(t)
	handshake(t, clock, a, b)
	pb := peerOf(b, a)
	_, kpB, _ := keypairsOf(pb)
	if kpB == nil || kpB.initiator {
		t.Fatal("b has no responder session")
	}
	kpB.sendNonce.Store(RekeyAfterMessages)
	ping(t, b, a, false)
	if n := b.tr.sent[wire.TypeInitiation].Load(); n != 1 {
		t.Fatalf("responder sent %d initiations at RekeyAfterMessages, want 1", n)
	}
	wait.Until(t, "new session", func() bool { _, cur, _ := keypairsOf(pb); return cur != kpB })
	ping(t, b, a, false)
	ping(t, a, b, false)
	_ = clock
}

// 10. A replayed initiation (same TAI64N) is dropped and changes nothing;
// a second valid initiation within 20 ms is dropped as a flood; forged
// cookie replies are ignored.
func TestReplayFloodForgedCookie(t *testing.T) {
	clock, a, b := newTimedPair(t)
	logA := recordSends(a, clock)
	handshake(t, clock, a, b)
	pa, pb := peerOf(a, b), peerOf(b, a)
	first := logA.since(0, isType(wire.TypeInitiation))[0].raw
	prev, cur, next := keypairsOf(pb)
	before, _ := b.dev.PeerStats(a.pub())
	responses := b.tr.sent[wire.TypeResponse].Load()

	// Replay, 1 s later, from another address.
	clock.Advance(time.Second)
	injectUDP(t, b, first)
	// The drop is counted where the handler gives up on the packet: what
	// it would have done (answer, move the endpoint) cannot follow.
	wait.Until(t, "timestamp drop", func() bool { return b.dev.Stats.DropTimestamp.Load() == 1 })
	if p, c, n := keypairsOf(pb); p != prev || c != cur || n != next {
		t.Fatal("replayed initiation changed b's sessions")
	}
	if after, _ := b.dev.PeerStats(a.pub()); after.Endpoint != before.Endpoint {
		t.Fatalf("replayed initiation moved the endpoint to %s", after.Endpoint)
	}
	if n := b.tr.sent[wire.TypeResponse].Load(); n != responses {
		t.Fatal("replayed initiation answered")
	}
	if n := b.dev.Stats.HandshakesDone.Load(); n != 1 {
		t.Fatalf("b completed %d handshakes", n)
	}
	ping(t, a, b, false)
	ping(t, b, a, false)

	// Fresh, valid initiations from a's key: the second one 0 ms after the
	// first (with a newer timestamp) is a flood; one 20 ms later is fine.
	c := listenUDP(t, "127.0.0.1")
	var gen noise.CookieGenerator
	gen.Init(b.pub())
	i1 := craftInitiation(t, a.key, b.pub(), clock.Now(), &gen, clock.Now())
	writeUDP(t, c, addrOf(b), i1)
	wait.Until(t, "response", func() bool { return b.tr.sent[wire.TypeResponse].Load() == responses+1 })
	writeUDP(t, c, addrOf(b), craftInitiation(t, a.key, b.pub(), clock.Now().Add(time.Second), &gen, clock.Now()))
	wait.Until(t, "flood drop", func() bool { return b.dev.Stats.DropFlood.Load() == 1 }) // the handler's last act
	if n := b.tr.sent[wire.TypeResponse].Load(); n != responses+1 {
		t.Fatal("flooded initiation answered")
	}
	clock.Advance(HandshakeInitiationRate)
	writeUDP(t, c, addrOf(b), craftInitiation(t, a.key, b.pub(), clock.Now().Add(2*time.Second), &gen, clock.Now()))
	wait.Until(t, "response", func() bool { return b.tr.sent[wire.TypeResponse].Load() == responses+2 })
	for i := 0; i < 2; i++ {
		if r := readUDP(c, 5*time.Second); len(r) != wire.ResponseSize || r[0] != wire.TypeResponse {
			t.Fatalf("reply %d: % x", i, r)
		}
	}
	if b.dev.Stats.DropTimestamp.Load() != 1 || b.dev.Stats.DropFlood.Load() != 1 {
		t.Fatal("extra drops")
	}

	// Forged cookie replies to a: unknown receiver index; a's real index
	// but sealed with the wrong key; the right key but bound to another
	// message than the one a sent.
	_, kpA, _ := keypairsOf(pa)
	src := make([]byte, 18)
	var r1, r2, r3 wire.CookieReply
	r1.Receiver = kpA.localIndex ^ 0x5a5a5a5a
	stranger, _ := noise.GeneratePrivateKey()
	var wrongKey, rightKey noise.CookieChecker
	wrongKey.Init(stranger.PublicKey())
	rightKey.Init(b.pub())
	if err := wrongKey.CreateReply(first, kpA.localIndex, src, clock.Now(), &r2); err != nil {
		t.Fatal(err)
	}
	if err := rightKey.CreateReply(i1, kpA.localIndex, src, clock.Now(), &r3); err != nil {
		t.Fatal(err)
	}
	ca := listenUDP(t, "127.0.0.1")
	for _, r := range []*wire.CookieReply{&r1, &r2, &r3} {
		writeUDP(t, ca, addrOf(a), r.Marshal(make([]byte, wire.CookieReplySize)))
	}
	wait.Until(t, "cookie reply drops", func() bool { return a.dev.Stats.DropCookieReply.Load() == 3 })
	if r := readUDP(ca, 100*time.Millisecond); r != nil {
		t.Fatalf("a answered a cookie reply: % x", r)
	}
	// a adopted no cookie: its next handshake message carries no MAC2.
	scratch := make([]byte, wire.InitiationSize)
	pa.cookies.AddMACs(scratch, clock.Now())
	if !isZeroBytes(mac2(scratch)) {
		t.Fatal("a took a cookie from a forged reply")
	}
}

// 11. Under load, an initiation without a valid MAC2 gets a cookie reply
// and no handshake; with the cookie, the initiator succeeds. With a valid
// MAC2, a source over 20 initiations/s (burst 5) is rate-limited while
// another source still gets through.
func TestUnderLoadCookiesAndRateLimit(t *testing.T) {
	clock, a, b := newTimedPair(t)
	b.dev.underLoadUntil.Store(clock.Now().Add(time.Hour).UnixNano())
	st := &b.dev.Stats

	// An attacker at 127.0.0.2 that knows b's public key (valid MAC1).
	s := listenUDP(t, "127.0.0.2")
	attacker, _ := noise.GeneratePrivateKey()
	var gen noise.CookieGenerator
	gen.Init(b.pub())
	m := craftInitiation(t, attacker, b.pub(), clock.Now(), &gen, clock.Now())
	writeUDP(t, s, addrOf(b), m)
	reply := readUDP(s, 5*time.Second)
	if len(reply) != wire.CookieReplySize || reply[0] != wire.TypeCookieReply {
		t.Fatalf("no cookie reply: % x", reply)
	}
	wait.Until(t, "cookie reply counted", func() bool { return st.CookieRepliesSent.Load() == 1 })
	if st.DropNeedCookie.Load() != 1 || st.DropUnknownPeer.Load() != 0 {
		t.Fatalf("without MAC2: %s", statsString(st))
	}
	var r wire.CookieReply
	if err := r.Unmarshal(reply); err != nil || r.Receiver != binary.LittleEndian.Uint32(m[4:8]) {
		t.Fatalf("cookie reply to the wrong sender index: %v", err)
	}
	if !gen.ConsumeReply(&r, clock.Now()) {
		t.Fatal("genuine cookie reply refused")
	}

	// With MAC2, at one instant: Burst pass the limiter (then fail as an
	// unknown peer), the rest are rate-limited.
	const n = 10
	for i := 0; i < n; i++ {
		msg := craftInitiation(t, attacker, b.pub(), clock.Now(), &gen, clock.Now())
		if isZeroBytes(mac2(msg)) {
			t.Fatal("no MAC2")
		}
		writeUDP(t, s, addrOf(b), msg)
	}
	wait.Until(t, "flood processed", func() bool { return st.DropRateLimited.Load()+st.DropUnknownPeer.Load() == n })
	if st.DropUnknownPeer.Load() != ratelimit.Burst || st.DropRateLimited.Load() != n-ratelimit.Burst {
		t.Fatalf("burst: %d passed, %d limited; want %d, %d", st.DropUnknownPeer.Load(), st.DropRateLimited.Load(), ratelimit.Burst, n-ratelimit.Burst)
	}
	// 1/20 s later exactly one more passes.
	clock.Advance(time.Second / ratelimit.PacketsPerSecond)
	for i := 0; i < 2; i++ {
		writeUDP(t, s, addrOf(b), craftInitiation(t, attacker, b.pub(), clock.Now(), &gen, clock.Now()))
	}
	wait.Until(t, "refill processed", func() bool { return st.DropRateLimited.Load()+st.DropUnknownPeer.Load() == n+2 })
	if st.DropUnknownPeer.Load() != ratelimit.Burst+1 {
		t.Fatalf("after 50 ms, %d passed in all, want %d", st.DropUnknownPeer.Load(), ratelimit.Burst+1)
	}
	if st.DropNeedCookie.Load() != 1 || st.HandshakesDone.Load() != 0 || b.tr.sent[wire.TypeResponse].Load() != 0 {
		t.Fatalf("attacker got further than the limiter: %s", statsString(st))
	}
	limited := st.DropRateLimited.Load()

	// a, at 127.0.0.1, is asked for a cookie, then gets through with it.
	logA := recordSends(a, clock)
	pkt := tunnelPacket(a, b, "under load")
	a.tun.Inbound <- pkt
	// The cookie reply is the handler's answer instead of handling the
	// initiation: once it is counted, the initiation is done with.
	wait.Until(t, "cookie reply to a", func() bool { return st.CookieRepliesSent.Load() == 2 })
	if st.HandshakesDone.Load() != 0 || b.tr.sent[wire.TypeResponse].Load() != 0 {
		t.Fatal("handshake without MAC2 under load")
	}
	for i := 0; i < 5 && st.HandshakesDone.Load() == 0; i++ {
		clock.Advance(RekeyTimeout + RekeyTimeoutJitterMax) // retransmission
		wait.Poll(5*time.Second, func() bool { return st.HandshakesDone.Load() == 1 })
	}
	expectPacket(t, b, pkt)
	inits := logA.since(0, isType(wire.TypeInitiation))
	if len(inits) < 2 || isZeroBytes(mac2(inits[len(inits)-1].raw)) {
		t.Fatalf("%d initiations; the accepted one has no MAC2", len(inits))
	}
	for _, m := range inits[:len(inits)-1] {
		if !isZeroBytes(mac2(m.raw)) {
			t.Fatal("an initiation with a valid MAC2 was refused")
		}
	}
	// One cookie reply for each of a's initiations without MAC2 (and one
	// for the attacker's first).
	wait.Until(t, "cookie replies counted", func() bool { return st.CookieRepliesSent.Load() == uint64(len(inits)) })
	if st.DropNeedCookie.Load() != uint64(len(inits)) {
		t.Fatalf("%d initiations refused for %d without MAC2", st.DropNeedCookie.Load()-1, len(inits)-1)
	}
	if st.DropRateLimited.Load() != limited {
		t.Fatal("a was rate-limited")
	}
	ping(t, b, a, false)
}

// 12. The responder sends no data on a new session before the initiator
// has used it: the session stays in next until confirmed.
func TestResponderWaitsForConfirmation(t *testing.T) {
	clock, a, b := newTimedPair(t)
	pa, pb := peerOf(a, b), peerOf(b, a)
	// Lose everything a sends from its first transport message on: b gets
	// the initiation, a the response, but b never hears a's confirmation.
	a.tr.mu.Lock()
	a.tr.onSend = func(p []byte) {
		if len(p) > 0 && p[0] == wire.TypeTransport {
			a.tr.cut.Store(true)
		}
	}
	a.tr.mu.Unlock()
	a.tun.Inbound <- tunnelPacket(a, b, "lost")
	wait.Until(t, "a's confirmation lost", a.tr.cut.Load)
	_, curA, _ := keypairsOf(pa)
	_, curB, nextB := keypairsOf(pb)
	if curA == nil || curB != nil || nextB == nil || nextB.localIndex != curA.remoteIndex {
		t.Fatalf("want a current, b next: a=%v b=%v/%v", curA, curB, nextB)
	}

	fromB := tunnelPacket(b, a, "too early")
	b.tun.Inbound <- fromB
	// b has no confirmed session: it starts its own handshake instead
	// (whose response, from a, is lost).
	wait.Until(t, "b initiates", func() bool { return b.tr.sent[wire.TypeInitiation].Load() == 1 })
	wait.Until(t, "a answers", func() bool { return a.dev.Stats.HandshakesDone.Load() == 2 })
	noPacket(t, a, 50*time.Millisecond)
	if n := b.tr.sent[wire.TypeTransport].Load(); n != 0 {
		t.Fatalf("b sent %d transport messages before confirmation", n)
	}
	if n := stagedLen(pb); n != 1 {
		t.Fatalf("b staged %d packets, want 1", n)
	}
	if _, cur, next := keypairsOf(pb); cur != nil || next != nextB {
		t.Fatal("b's unconfirmed session moved")
	}

	// a's next transport packet confirms the session; b's data follows on it.
	a.tr.mu.Lock()
	a.tr.onSend = nil
	a.tr.mu.Unlock()
	logB := recordSends(b, clock)
	a.tr.cut.Store(false)
	again := tunnelPacket(a, b, "confirm")
	a.tun.Inbound <- again
	expectPacket(t, b, again)
	expectPacket(t, a, fromB)
	if _, cur, next := keypairsOf(pb); cur != nextB || next != nil {
		t.Fatal("b did not promote the confirmed session")
	}
	data := logB.since(0, isData)
	if len(data) != 1 || data[0].receiver != curA.localIndex {
		t.Fatalf("b's data not sent on the confirmed session: %+v", data)
	}
}

// Load is also detected from the handshake queue: with UnderLoadQueueLen
// messages waiting, MAC2 is required, and stays required for
// UnderLoadAfterTime after the queue last looked long.
func TestUnderLoadByQueueLength(t *testing.T) {
	clock, a, b := newTimedPair(t)
	st := &b.dev.Stats
	pb := peerOf(b, a)
	var genA, genX noise.CookieGenerator
	genA.Init(b.pub())
	genX.Init(b.pub())
	attacker, _ := noise.GeneratePrivateKey()
	c := listenUDP(t, "127.0.0.1")
	s := listenUDP(t, "127.0.0.2")

	// Park every handshake worker on b's lock for peer a: each takes one
	// valid initiation from a (checked before the queue grew) and waits.
	pb.hs.Lock()
	locked := true
	defer func() {
		if locked {
			pb.hs.Unlock()
		}
	}()
	workers := runtime.GOMAXPROCS(0)
	for i := 0; i < workers; i++ {
		writeUDP(t, c, addrOf(b), craftInitiation(t, a.key, b.pub(), clock.Now(), &genA, clock.Now()))
	}
	// Taken off the queue is not enough: a worker checks the load (the
	// queue's length) after that, and must have done so before the queue
	// fills below. Wait until every one waits for the lock, past the check.
	wait.Until(t, "workers parked", func() bool {
		return len(b.dev.queue.handshake) == 0 && handshakeWorkersParked() == workers
	})

	// The queue fills past UnderLoadQueueLen with MAC2-less initiations.
	const n = UnderLoadQueueLen + 12
	for i := 0; i < n; i++ {
		writeUDP(t, s, addrOf(b), craftInitiation(t, attacker, b.pub(), clock.Now(), &genX, clock.Now()))
		if i%32 == 31 {
			time.Sleep(time.Millisecond) // keep within the socket buffer
		}
	}
	wait.Until(t, "queue filled", func() bool { return len(b.dev.queue.handshake) == n })
	pb.hs.Unlock()
	locked = false

	// Every one of them is answered with a cookie, none reaches the DH,
	// even those handled after the queue shrank below the threshold.
	wait.Until(t, "cookies", func() bool { return st.DropNeedCookie.Load() == n && st.CookieRepliesSent.Load() == n })
	if st.DropUnknownPeer.Load() != 0 {
		t.Fatalf("under load by queue length: %s", statsString(st))
	}
	// The parked initiations from a were accepted before the load began:
	// one is answered, the other ones are a flood.
	wait.Until(t, "parked initiations", func() bool {
		return b.tr.sent[wire.TypeResponse].Load() == 1 && st.DropFlood.Load() == uint64(workers-1)
	})

	// Within UnderLoadAfterTime MAC2 is still required; after it, not.
	clock.Advance(UnderLoadAfterTime - time.Millisecond)
	writeUDP(t, s, addrOf(b), craftInitiation(t, attacker, b.pub(), clock.Now(), &genX, clock.Now()))
	wait.Until(t, "cookie", func() bool { return st.DropNeedCookie.Load() == n+1 })
	clock.Advance(2 * time.Millisecond)
	writeUDP(t, s, addrOf(b), craftInitiation(t, attacker, b.pub(), clock.Now(), &genX, clock.Now()))
	wait.Until(t, "handled without cookie", func() bool { return st.DropUnknownPeer.Load() == 1 })
	if st.DropNeedCookie.Load() != n+1 {
		t.Fatal("cookie required after the load ended")
	}
}

// handshakeWorkersParked counts the goroutines blocked on a lock inside
// handleInitiation (where TestUnderLoadByQueueLength parks the workers).
func handshakeWorkersParked() int {
	n := 0
	for _, g := range interopGoroutines() {
		if strings.Contains(g, "[sync.Mutex.Lock") && strings.Contains(g, ").handleInitiation(") {
			n++
		}
	}
	return n
}
