package device

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/wire"
)

// Timer tests. Both devices of a pair share one fakeClock: time moves only
// in Advance, which fires due timers synchronously in the test goroutine,
// while packets still travel through real goroutines and loopback UDP. So a
// test advances in steps and, between steps, waits (on counters, timer
// deadlines or delivered packets) for the network to catch up.

// 1. The initiator replaces its session after RekeyAfterTime, not before,
// and data flows on the new one.
func TestRekeyAfterTime(t *testing.T) {
	clock, a, b := newTimedPair(t)
	kp0 := handshake(t, clock, a, b)
	pa, pb := peerOf(a, b), peerOf(b, a)
	start := kp0.created

	// Traffic both ways every 7 s (below every idle timer) up to 119 s.
	for clock.Now().Sub(start)+7*time.Second < RekeyAfterTime {
		clock.Advance(7 * time.Second)
		ping(t, a, b, false)
		ping(t, b, a, false)
	}
	if age := clock.Now().Sub(start); age != 119*time.Second {
		t.Fatalf("age %v", age)
	}
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 1 {
		t.Fatalf("a sent %d initiations before RekeyAfterTime, want 1", n)
	}
	if n := b.tr.sent[wire.TypeInitiation].Load(); n != 0 {
		t.Fatalf("responder b sent %d initiations", n)
	}
	if _, cur, _ := keypairsOf(pa); cur != kp0 {
		t.Fatal("session replaced before RekeyAfterTime")
	}

	clock.Advance(2 * time.Second) // 121 s
	log := recordSends(a, clock)
	ping(t, a, b, false) // starts the rekey; the packet goes on whichever key is current
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Fatalf("a sent %d initiations after RekeyAfterTime, want 2", n)
	}
	wait.Until(t, "new session", func() bool { _, cur, _ := keypairsOf(pa); return cur != kp0 })
	prev, kp1, _ := keypairsOf(pa)
	if !kp1.created.Equal(clock.Now()) || kp1.created.Sub(start) != 121*time.Second {
		t.Fatalf("new session created at +%v, want +121s", kp1.created.Sub(start))
	}
	if !kp1.initiator || prev != kp0 {
		t.Fatalf("initiator=%v previous is old session=%v", kp1.initiator, prev == kp0)
	}
	mark := log.len()
	ping(t, a, b, false)
	ping(t, b, a, false)
	data := log.since(mark, isData)
	if len(data) == 0 || data[len(data)-1].receiver != kp1.remoteIndex {
		t.Fatalf("data after rekey not sent on the new session: %+v", data)
	}
	_, bcur, _ := keypairsOf(pb)
	if bcur == nil || bcur.localIndex != kp1.remoteIndex || bcur.initiator {
		t.Fatal("responder did not move to the new session")
	}
	if n := b.dev.Stats.HandshakesDone.Load(); n != 2 {
		t.Fatalf("b completed %d handshakes, want 2", n)
	}
}

// 2. No key is used after RejectAfterTime: neither side sends on it, the
// receiver refuses it, and new packets wait for a new session.
func TestRejectAfterTime(t *testing.T) {
	clock, a, b := newTimedPair(t)
	kp0 := handshake(t, clock, a, b)
	pa, pb := peerOf(a, b), peerOf(b, a)
	log := recordSends(a, clock)
	logB := recordSends(b, clock)

	// A packet on the old key that b never received, to replay after 180 s.
	a.tr.cut.Store(true)
	a.tun.Inbound <- tunnelPacket(a, b, "late")
	wait.Until(t, "late packet sealed", func() bool { return log.count(isData) == 1 })
	late := log.since(0, isData)[0]
	if late.receiver != kp0.remoteIndex {
		t.Fatal("late packet not on the first session")
	}
	a.tr.cut.Store(false)
	b.tr.cut.Store(true) // b's replies are lost from now on

	clock.Advance(RejectAfterTime + time.Second)
	// b's passive keepalive (due at 10 s) was sealed on the old key when it
	// was still valid; let it and a's retried initiations settle.
	wait.Until(t, "b's keepalive", func() bool { return logB.count(isKeepalive) == 1 })
	settleInitiations(t, b, a)

	mark, markB := log.len(), logB.len()
	initsBefore := a.tr.sent[wire.TypeInitiation].Load()
	after := tunnelPacket(a, b, "after 180 s")
	a.tun.Inbound <- after
	wait.Until(t, "a initiates", func() bool { return a.tr.sent[wire.TypeInitiation].Load() == initsBefore+1 })
	noPacket(t, b, 100*time.Millisecond)
	if got := log.since(mark, isType(wire.TypeTransport)); len(got) != 0 {
		t.Fatalf("a sent %d transport messages on a key older than RejectAfterTime", len(got))
	}
	if n := stagedLen(pa); n != 1 {
		t.Fatalf("a staged %d packets, want 1", n)
	}

	// b, the responder, must not send on it either.
	fromB := tunnelPacket(b, a, "b after 180 s")
	b.tun.Inbound <- fromB
	wait.Until(t, "b staged", func() bool { return stagedLen(pb) == 1 })
	wait.Until(t, "b initiates", func() bool { return b.tr.sent[wire.TypeInitiation].Load() == 1 })
	noPacket(t, a, 50*time.Millisecond)
	if got := logB.since(markB, isType(wire.TypeTransport)); len(got) != 0 {
		t.Fatalf("b sent %d transport messages on a key older than RejectAfterTime", len(got))
	}

	// The receive side refuses the old key: the packet that b never saw
	// is authentic and fresh for the replay window, but too late.
	injectUDP(t, b, late.raw)
	wait.Until(t, "expired-key drop", func() bool { return b.dev.Stats.DropExpiredKey.Load() == 1 })
	noPacket(t, b, 50*time.Millisecond)

	// The staged packets go out once a new session exists. Both sides
	// retry their handshake; only the first retry is let through, since
	// two initiations crossing on the wire would cancel each other (each
	// side drops its own attempt to answer the other's) until a later retry.
	b.tr.cut.Store(false)
	wa, oka := deadline(&pa.timers.retransmitHandshake)
	wb, okb := deadline(&pb.timers.retransmitHandshake)
	if !oka || !okb {
		t.Fatal("handshake retransmission not armed")
	}
	clock.Advance(min(wa.Sub(clock.Now()), wb.Sub(clock.Now())))
	expectPacket(t, b, after)
	expectPacket(t, a, fromB)
	for _, m := range log.since(mark, isData) {
		if m.receiver == kp0.remoteIndex {
			t.Fatal("staged packet sent on the expired session")
		}
	}
}

// 3. Without a new session, all key material is wiped 540 s after the last
// one was derived, and not before.
func TestZeroKeyMaterial(t *testing.T) {
	clock, a, b := newTimedPair(t)
	kp0 := handshake(t, clock, a, b)
	pa := peerOf(a, b)
	b.tr.cut.Store(true)

	// a tries to rehandshake at 15 s (no reply to its data), retries for
	// 90 s and gives up; its keys stay until 540 s.
	clock.Advance(ZeroKeyMaterialAfter - time.Second)
	settleInitiations(t, b, a)
	if _, cur, _ := keypairsOf(pa); cur != kp0 {
		t.Fatal("keys gone before ZeroKeyMaterialAfter")
	}
	a.dev.index.RLock()
	indices := len(a.dev.index.m)
	a.dev.index.RUnlock()
	if indices != 2 { // the session and the last handshake attempt
		t.Fatalf("a has %d indices before zeroing, want 2", indices)
	}

	clock.Advance(2 * time.Second)
	if prev, cur, next := keypairsOf(pa); prev != nil || cur != nil || next != nil {
		t.Fatalf("keys not zeroed after %v: %v %v %v", ZeroKeyMaterialAfter, prev, cur, next)
	}
	pa.hs.Lock()
	st, li, ri := pa.hs.h.State, pa.hs.h.LocalIndex, pa.hs.h.RemoteIndex
	pa.hs.Unlock()
	if st != noise.StateZeroed || li != 0 || ri != 0 {
		t.Fatalf("handshake not cleared: state %v indices %d/%d", st, li, ri)
	}
	a.dev.index.RLock()
	indices = len(a.dev.index.m)
	a.dev.index.RUnlock()
	if indices != 0 {
		t.Fatalf("%d receiver indices left after zeroing", indices)
	}

	// A fresh handshake still works.
	b.tr.cut.Store(false)
	ping(t, a, b, false)
	if _, cur, _ := keypairsOf(pa); cur == nil || !cur.created.Equal(clock.Now()) {
		t.Fatal("no new session after zeroing")
	}
}

// 4. Unanswered, a handshake is sent 1 + MaxTimerHandshakes times,
// RekeyTimeout (+ jitter) apart; then the peer gives up and drops what was
// staged.
func TestHandshakeRetriesGiveUp(t *testing.T) {
	clock, a, b := newTimedPair(t)
	pa := peerOf(a, b)
	log := recordSends(a, clock)
	a.tr.cut.Store(true) // the responder is unreachable

	for i := 0; i < 3; i++ {
		a.tun.Inbound <- tunnelPacket(a, b, "waiting")
	}
	wait.Until(t, "3 staged", func() bool { return stagedLen(pa) == 3 })
	wait.Until(t, "first initiation", func() bool { return log.count(isType(wire.TypeInitiation)) == 1 })

	// Just before the last retry is due nothing has been dropped yet.
	clock.Advance(time.Duration(MaxTimerHandshakes)*RekeyTimeout - time.Second)
	if n := a.dev.Stats.DropStaged.Load(); n != 0 {
		t.Fatalf("dropped %d staged packets while still retrying", n)
	}
	clock.Advance(time.Duration(MaxTimerHandshakes+1) * (RekeyTimeout + RekeyTimeoutJitterMax))
	inits := log.since(0, isType(wire.TypeInitiation))
	if len(inits) != 1+MaxTimerHandshakes {
		t.Fatalf("sent %d initiations, want %d", len(inits), 1+MaxTimerHandshakes)
	}
	for i := 1; i < len(inits); i++ {
		gap := inits[i].at.Sub(inits[i-1].at)
		if gap < RekeyTimeout || gap > RekeyTimeout+RekeyTimeoutJitterMax {
			t.Errorf("initiation %d sent %v after the previous one", i, gap)
		}
		if string(inits[i].raw[4:8]) == string(inits[i-1].raw[4:8]) {
			t.Errorf("initiation %d reuses the sender index", i)
		}
	}
	if n := a.dev.Stats.DropStaged.Load(); n != 3 {
		t.Fatalf("DropStaged = %d, want 3", n)
	}
	if n := stagedLen(pa); n != 0 {
		t.Fatalf("%d packets still staged", n)
	}

	// It stays quiet afterwards.
	clock.Advance(10 * time.Minute)
	if n := log.count(isType(wire.TypeInitiation)); n != 1+MaxTimerHandshakes {
		t.Fatalf("%d initiations after giving up", n-1-MaxTimerHandshakes)
	}
	if n := log.count(isType(wire.TypeTransport)); n != 0 {
		t.Fatalf("%d transport messages without a session", n)
	}
}

// 5. A peer that received data and has nothing to send answers with a
// keepalive after KeepaliveTimeout, not before; that keepalive keeps the
// other side from rehandshaking.
func TestPassiveKeepalive(t *testing.T) {
	clock, a, b := newTimedPair(t)
	handshake(t, clock, a, b)
	pa := peerOf(a, b)
	logB := recordSends(b, clock)

	advanceNoneDue(t, clock, KeepaliveTimeout-10*time.Millisecond)
	if n := logB.len(); n != 0 {
		t.Fatalf("b sent %d messages before KeepaliveTimeout", n)
	}
	clock.Advance(10 * time.Millisecond)
	wait.Until(t, "b's keepalive", func() bool { return logB.count(isKeepalive) == 1 })
	if n := logB.len(); n != 1 {
		t.Fatalf("b sent %d messages, want one keepalive", n)
	}
	// a hears it, so its "nothing received" timer is cleared...
	wait.Until(t, "a's new-handshake timer cleared", disarmed(&pa.timers.newHandshake))
	// ... and nobody rehandshakes or sends anything more while idle.
	advanceNoneDue(t, clock, KeepaliveTimeout+RekeyTimeout+RekeyTimeoutJitterMax)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 1 {
		t.Fatalf("a sent %d initiations, want 1", n)
	}
	if n := logB.len(); n != 1 {
		t.Fatalf("b sent %d messages while idle, want 1", n)
	}
}

// 6. Data sent and nothing heard back for KeepaliveTimeout+RekeyTimeout
// starts a new handshake.
func TestNewHandshakeWhenNoReply(t *testing.T) {
	clock, a, b := newTimedPair(t)
	handshake(t, clock, a, b)
	b.tr.cut.Store(true) // b's keepalive is lost

	clock.Advance(KeepaliveTimeout + RekeyTimeout - time.Millisecond)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 1 {
		t.Fatalf("a sent %d initiations before %v, want 1", n, KeepaliveTimeout+RekeyTimeout)
	}
	clock.Advance(RekeyTimeoutJitterMax + time.Millisecond)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Fatalf("a sent %d initiations after %v, want 2", n, KeepaliveTimeout+RekeyTimeout+RekeyTimeoutJitterMax)
	}
}

// 7. With persistent_keepalive_interval=25, a sends a keepalive after every
// 25 s without traffic; b (no interval) stays silent.
func TestPersistentKeepalive(t *testing.T) {
	clock := newFakeClock()
	a, b := newNode(t, countingClock{clock}, 1), newNode(t, countingClock{clock}, 2)
	connect(t, b, a, 0)
	logA := recordSends(a, clock)
	logB := recordSends(b, clock)
	connect(t, a, b, 25) // starts a handshake, confirmed by a keepalive
	pa, pb := peerOf(a, b), peerOf(b, a)
	wait.Until(t, "session confirmed", func() bool { _, cur, _ := keypairsOf(pb); return cur != nil })
	if n := logA.count(isKeepalive); n != 1 {
		t.Fatalf("%d keepalives after the handshake, want 1", n)
	}
	// Every authenticated packet a sent or received restarted the
	// interval: its initiation, b's response and its keepalive.
	pk := &pa.timers.persistentKeepalive
	wait.Until(t, "timer re-armed after the keepalive", func() bool { return resets(pk) == 3 })
	const interval = 25 * time.Second
	for i := 2; i <= 4; i++ {
		if !armedAt(pk, clock.Now().Add(interval))() {
			t.Fatalf("keepalive %d not due %v after the last one", i, interval)
		}
		advanceNoneDue(t, clock, interval-10*time.Millisecond)
		if n := logA.count(isKeepalive); n != i-1 {
			t.Fatalf("keepalive %d sent early", i)
		}
		clock.Advance(10 * time.Millisecond)
		wait.Until(t, "persistent keepalive", func() bool { return logA.count(isKeepalive) == i })
		wait.Until(t, "timer re-armed after the keepalive", func() bool { return resets(pk) == int64(i)+2 })
	}
	if n := logA.count(isType(wire.TypeInitiation)); n != 1 {
		t.Fatalf("a sent %d initiations", n)
	}
	if n := logB.count(isType(wire.TypeTransport)); n != 0 {
		t.Fatalf("b, without persistent keepalive, sent %d transport messages", n)
	}
}

// rekeyOnReceiveSetup makes a session (a initiator), lets it idle to 164 s
// with traffic only from b at the end, and checks that receiving on it
// before RekeyOnReceiveAge starts nothing.
func rekeyOnReceiveSetup(t *testing.T) (*fakeClock, *node, *node, *Keypair) {
	clock, a, b := newTimedPair(t)
	kp0 := handshake(t, clock, a, b)
	pb := peerOf(b, a)
	ping(t, b, a, false)
	wait.Until(t, "b's new-handshake timer", func() bool { _, ok := deadline(&pb.timers.newHandshake); return ok })
	// a's passive keepalive (10 s) answers b's data; after that both are idle.
	clock.Advance(KeepaliveTimeout)
	wait.Until(t, "b heard a's keepalive", disarmed(&pb.timers.newHandshake))
	clock.Advance(RekeyOnReceiveAge - KeepaliveTimeout - time.Second) // 164 s
	ping(t, b, a, false)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 1 {
		t.Fatalf("receiving on a %v-old key started a handshake", clock.Now().Sub(kp0.created))
	}
	clock.Advance(2 * time.Second) // 166 s
	return clock, a, b, kp0
}

// 8. An initiator receiving on a key older than RekeyOnReceiveAge starts a
// handshake, and only one.
func TestRekeyOnReceive(t *testing.T) {
	clock, a, b, kp0 := rekeyOnReceiveSetup(t)
	pa := peerOf(a, b)
	ping(t, b, a, false)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Fatalf("a sent %d initiations, want 2", n)
	}
	wait.Until(t, "new session", func() bool { _, cur, _ := keypairsOf(pa); return cur != kp0 })
	if _, cur, _ := keypairsOf(pa); !cur.created.Equal(clock.Now()) || !cur.initiator {
		t.Fatal("new session not made by a at 166 s")
	}
	for i := 0; i < 3; i++ {
		ping(t, b, a, false)
		ping(t, a, b, false)
	}
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Fatalf("a sent %d initiations, want 2", n)
	}
	if n := b.dev.Stats.HandshakesDone.Load(); n != 2 {
		t.Fatalf("b completed %d handshakes, want 2", n)
	}
}

// The rekey on receive happens once per key, not once per received packet
// (checked beyond the RekeyTimeout spacing of initiations, with the
// retransmission out of the way).
func TestRekeyOnReceiveOnlyOnce(t *testing.T) {
	clock, a, b, kp0 := rekeyOnReceiveSetup(t)
	pa := peerOf(a, b)
	a.tr.cut.Store(true) // the rekey does not complete
	ping(t, b, a, false)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Fatalf("a sent %d initiations, want 2", n)
	}
	pa.timers.retransmitHandshake.del()
	clock.Advance(RekeyTimeout + time.Second) // 172 s: the old key is still valid
	ping(t, b, a, false)
	ping(t, b, a, false)
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 2 {
		t.Fatalf("a sent %d initiations, want 2 (rekey on receive repeated)", n)
	}
	// Sending rekeys as usual (the key is older than RekeyAfterTime).
	a.tr.cut.Store(false)
	ping(t, a, b, false)
	wait.Until(t, "new session", func() bool { _, cur, _ := keypairsOf(pa); return cur != kp0 })
	if n := a.tr.sent[wire.TypeInitiation].Load(); n != 3 {
		t.Fatalf("a sent %d initiations, want 3", n)
	}
}

// injectUDP sends raw bytes to n's port from a fresh loopback socket.
func injectUDP(t *testing.T, n *node, b []byte) {
	t.Helper()
	c := listenUDP(t, "127.0.0.1")
	if _, err := c.WriteToUDPAddrPort(b, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.dev.Port())); err != nil {
		t.Fatal(err)
	}
}
