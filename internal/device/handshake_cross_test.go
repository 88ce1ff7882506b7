package device

import (
	"testing"

	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/wire"
)

// TestCrossedHandshakesDoNotRepeat: two peers whose first packets leave at
// the same moment send initiations that cross. Each answers the other's,
// which replaces its own attempt, and drops the answer to its own: neither
// has a session it may send on. When traffic keeps coming in step at both
// ends (both ping each other once a second), a staged packet used to start
// the next attempt on both at the same instant, RekeyTimeout after the
// last: they crossed again, and again (a mesh test's first pair failed so
// for 12 s under load). While a retry is due, a staged packet now leaves
// the next attempt to it: the retries' jitter sets the two ends apart.
func TestCrossedHandshakesDoNotRepeat(t *testing.T) {
	clock, a, b := newTimedPair(t)
	pa, pb := peerOf(a, b), peerOf(b, a)
	logA, logB := recordSends(a, clock), recordSends(b, clock)
	inits := func(l *sendLog) int { return l.count(isType(wire.TypeInitiation)) }

	// Both initiate; the link holds everything (cut both ways, recorded).
	a.tr.cut.Store(true)
	b.tr.cut.Store(true)
	a0, b0 := tunnelPacket(a, b, "a0"), tunnelPacket(b, a, "b0")
	a.tun.Inbound <- a0
	b.tun.Inbound <- b0
	wait.Until(t, "both initiate", func() bool { return inits(logA) == 1 && inits(logB) == 1 })
	initA := logA.since(0, isType(wire.TypeInitiation))[0].raw
	initB := logB.since(0, isType(wire.TypeInitiation))[0].raw

	// Each gets the other's initiation after sending its own, and answers.
	deliver(t, b, a, initB)
	deliver(t, a, b, initA)
	wait.Until(t, "both answer", func() bool {
		return logA.count(isType(wire.TypeResponse)) == 1 && logB.count(isType(wire.TypeResponse)) == 1
	})
	a.tr.cut.Store(false)
	b.tr.cut.Store(false)
	deliver(t, b, a, logB.since(0, isType(wire.TypeResponse))[0].raw)
	deliver(t, a, b, logA.since(0, isType(wire.TypeResponse))[0].raw)
	wait.Until(t, "both drop the answer to their own", func() bool {
		return a.dev.Stats.DropHandshake.Load() == 1 && b.dev.Stats.DropHandshake.Load() == 1
	})
	for _, p := range []*Peer{pa, pb} {
		if _, cur, next := keypairsOf(p); cur != nil || next == nil {
			t.Fatalf("after crossing: current %v, next %v; want only an unconfirmed next", cur, next)
		}
	}

	// RekeyTimeout later, both ends have more to send at the same instant.
	wa, oka := deadline(&pa.timers.retransmitHandshake)
	wb, okb := deadline(&pb.timers.retransmitHandshake)
	if !oka || !okb {
		t.Fatal("handshake retransmission not armed")
	}
	clock.Advance(RekeyTimeout)
	a1, b1 := tunnelPacket(a, b, "a1"), tunnelPacket(b, a, "b1")
	a.tun.Inbound <- a1
	b.tun.Inbound <- b1
	wait.Until(t, "both staged", func() bool { return stagedLen(pa) == 2 && stagedLen(pb) == 2 })
	firstRetry := wa
	if wb.Before(wa) {
		firstRetry = wb
	}
	if !clock.Now().Before(firstRetry) {
		t.Skip("a retry drew no jitter") // mrand.N(333 ms) in ns: about one run in 3e8
	}
	if na, nb := inits(logA), inits(logB); na != 1 || nb != 1 {
		t.Fatalf("at RekeyTimeout both ends initiated again (a %d, b %d initiations): they cross again", na, nb)
	}

	// The retries go out at their own times. The earlier one completes a
	// session; the data its initiator sends confirms the other end's, which
	// then sends what it staged.
	sent := map[*node][2][]byte{a: {a0, a1}, b: {b0, b1}}
	first, second := a, b
	if wb.Before(wa) {
		first, second = b, a
	}
	clock.Advance(firstRetry.Sub(clock.Now()))
	expectPacket(t, second, sent[first][0])
	expectPacket(t, second, sent[first][1])
	expectPacket(t, first, sent[second][0])
	expectPacket(t, first, sent[second][1])
}

// deliver sends a datagram from one node's socket to its peer's endpoint,
// past a cut.
func deliver(t *testing.T, from, to *node, raw []byte) {
	t.Helper()
	if err := from.tr.Transport.Send([][]byte{raw}, peerOf(from, to).Endpoint()); err != nil {
		t.Fatal(err)
	}
}
