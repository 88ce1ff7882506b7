package device

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
	"github.com/warrenmesh/warren/internal/wire"
)

// Timer tests. Both devices of a pair share one fakeClock: time moves only
// in Advance, which fires due timers synchronously in the test goroutine,
// while packets still travel through real goroutines and loopback UDP. So a
// test advances in steps and, between steps, waits (on counters, timer
// deadlines or delivered packets) for the network to catch up.

// sentMsg is one message a node handed to its transport.
type sentMsg struct {
	typ      byte
	size     int
	receiver uint32 // transport and cookie reply
	counter  uint64 // transport
	at       time.Time
	raw      []byte
}

func (m sentMsg) isData() bool {
	return m.typ == wire.TypeTransport && m.size > wire.MinTransportSize
}

func (m sentMsg) isKeepalive() bool {
	return m.typ == wire.TypeTransport && m.size == wire.MinTransportSize
}

// sendLog records everything a node sends (including what a cut drops).
type sendLog struct {
	mu   sync.Mutex
	msgs []sentMsg
}

func recordSends(n *node, clock *fakeClock) *sendLog {
	l := &sendLog{}
	n.tr.mu.Lock()
	n.tr.onSend = func(b []byte) {
		if len(b) < 4 {
			return
		}
		m := sentMsg{typ: b[0], size: len(b), at: clock.Now(), raw: append([]byte(nil), b...)}
		switch {
		case m.typ == wire.TypeTransport && len(b) >= wire.TransportHeaderSize:
			m.receiver = binary.LittleEndian.Uint32(b[wire.TransportReceiverOffset:])
			m.counter = binary.LittleEndian.Uint64(b[wire.TransportCounterOffset:])
		case m.typ == wire.TypeCookieReply && len(b) >= 8:
			m.receiver = binary.LittleEndian.Uint32(b[4:])
		}
		l.mu.Lock()
		l.msgs = append(l.msgs, m)
		l.mu.Unlock()
	}
	n.tr.mu.Unlock()
	return l
}

func (l *sendLog) all() []sentMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sentMsg(nil), l.msgs...)
}

func (l *sendLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// since returns the messages recorded from index mark on that match f.
func (l *sendLog) since(mark int, f func(sentMsg) bool) []sentMsg {
	var out []sentMsg
	for _, m := range l.all()[mark:] {
		if f(m) {
			out = append(out, m)
		}
	}
	return out
}

func (l *sendLog) count(f func(sentMsg) bool) int { return len(l.since(0, f)) }

func isType(typ byte) func(sentMsg) bool { return func(m sentMsg) bool { return m.typ == typ } }

func isData(m sentMsg) bool      { return m.isData() }
func isKeepalive(m sentMsg) bool { return m.isKeepalive() }

func peerOf(n, other *node) *Peer {
	p := n.dev.LookupPeer(other.pub())
	if p == nil {
		panic("no such peer")
	}
	return p
}

func keypairsOf(p *Peer) (prev, cur, next *Keypair) {
	p.keypairs.RLock()
	defer p.keypairs.RUnlock()
	return p.keypairs.previous, p.keypairs.current, p.keypairs.next
}

func stagedLen(p *Peer) int {
	p.staged.Lock()
	defer p.staged.Unlock()
	return len(p.staged.elems)
}

// countingClock is a fakeClock whose timers count how often they were
// armed, so that a test can wait for a timer that the engine re-arms
// asynchronously (after a send) to have been re-armed.
type countingClock struct{ *fakeClock }

type countedTimer struct {
	*fakeTimer
	resets atomic.Int64
}

func (c countingClock) NewTimer(f func()) Timer {
	return &countedTimer{fakeTimer: c.fakeClock.NewTimer(f).(*fakeTimer)}
}

func (t *countedTimer) Reset(d time.Duration) {
	t.fakeTimer.Reset(d)
	t.resets.Add(1)
}

func resets(pt *peerTimer) int64 { return pt.t.(*countedTimer).resets.Load() }

// deadline reports when a peer timer driven by a fakeClock fires next.
func deadline(pt *peerTimer) (time.Time, bool) {
	var ft *fakeTimer
	switch t := pt.t.(type) {
	case *fakeTimer:
		ft = t
	case *countedTimer:
		ft = t.fakeTimer
	}
	return ft.Deadline()
}

func armedAt(pt *peerTimer, when time.Time) func() bool {
	return func() bool {
		w, ok := deadline(pt)
		return ok && w.Equal(when)
	}
}

func disarmed(pt *peerTimer) func() bool {
	return func() bool { _, ok := deadline(pt); return !ok }
}

// tunnelPacket is an IPv4 UDP packet from one node's tunnel address to
// another's.
func tunnelPacket(from, to *node, payload string) []byte {
	return tuntest.UDPPacket(netip.AddrPortFrom(from.addr, 4000), netip.AddrPortFrom(to.addr, 5000), []byte(payload))
}

// expectPacket waits for the next packet n's host side receives and checks
// that it is pkt.
func expectPacket(t *testing.T, n *node, pkt []byte) {
	t.Helper()
	select {
	case got := <-n.tun.Outbound:
		if string(got) != string(pkt) {
			t.Fatalf("delivered % x, want % x", got[:min(len(got), 40)], pkt[:min(len(pkt), 40)])
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("packet not delivered")
	}
}

// advanceNoneDue advances the clock by d and fails the test if any timer
// fired meanwhile. Timers fire synchronously in Advance and are what makes
// an idle node send (keepalives, handshakes), so an advance that fires
// none has started nothing: a check that nothing was sent needs no wait
// after it, and no sleep to let something show up.
func advanceNoneDue(t *testing.T, c *fakeClock, d time.Duration) {
	t.Helper()
	before := c.Fired()
	c.Advance(d)
	if n := c.Fired() - before; n != 0 {
		t.Fatalf("%d timers fired within %v", n, d)
	}
}

// settleInitiations waits until responder n has handled every initiation
// that initiator from sent it (accepted, or dropped as a flood or replay).
// Initiations fired in a burst by one Advance are otherwise handled later,
// at a later fake time, which would skew the 20 ms flood window.
func settleInitiations(t *testing.T, n, from *node) {
	t.Helper()
	wait.Until(t, "initiations handled", func() bool {
		st := &n.dev.Stats
		return st.HandshakesDone.Load()+st.DropFlood.Load()+st.DropTimestamp.Load() == from.tr.sent[wire.TypeInitiation].Load()
	})
}

func newTimedPair(t *testing.T) (*fakeClock, *node, *node) {
	clock := newFakeClock()
	a, b := newPair(t, clock)
	return clock, a, b
}

// handshake pings a→b (a initiates) and waits until a's send-side timers
// have been set by the data it sent, so that the next Advance starts from a
// settled state.
func handshake(t *testing.T, clock *fakeClock, a, b *node) *Keypair {
	t.Helper()
	ping(t, a, b, false)
	pa := peerOf(a, b)
	_, kp, _ := keypairsOf(pa)
	if kp == nil || !kp.initiator {
		t.Fatalf("no initiator session after the first ping: %+v", kp)
	}
	wait.Until(t, "a's new-handshake timer", func() bool { _, ok := deadline(&pa.timers.newHandshake); return ok })
	return kp
}
