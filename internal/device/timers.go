package device

import (
	"sync/atomic"
	"time"
)

// peerTimer is one of a peer's protocol timers.
type peerTimer struct {
	t       Timer
	pending atomic.Bool
}

func (t *peerTimer) mod(d time.Duration) {
	t.pending.Store(true)
	t.t.Reset(d)
}

// del disarms the timer. It runs for every batch sent or received, so it
// touches the runtime's timer only when the timer is armed.
func (t *peerTimer) del() {
	if t.pending.Swap(false) {
		t.t.Stop()
	}
}

// peerTimers are the five timers of the WireGuard paper (section 6) for one
// peer, and the events that set and clear them.
type peerTimers struct {
	p                     *Peer
	retransmitHandshake   peerTimer
	sendKeepalive         peerTimer
	newHandshake          peerTimer
	zeroKeyMaterial       peerTimer
	persistentKeepalive   peerTimer
	handshakeAttempts     atomic.Uint32
	needAnotherKeepalive  atomic.Bool
	sentLastMinuteHandshk atomic.Bool
}

func (ts *peerTimers) init(p *Peer) {
	ts.p = p
	c := p.dev.clock
	wrap := func(t *peerTimer, fn func()) {
		t.t = c.NewTimer(func() {
			if !t.pending.Swap(false) || !p.isRunning() {
				return
			}
			fn()
		})
	}
	wrap(&ts.retransmitHandshake, ts.expiredRetransmitHandshake)
	wrap(&ts.sendKeepalive, ts.expiredSendKeepalive)
	wrap(&ts.newHandshake, ts.expiredNewHandshake)
	wrap(&ts.zeroKeyMaterial, ts.expiredZeroKeyMaterial)
	wrap(&ts.persistentKeepalive, ts.expiredPersistentKeepalive)
}

func (ts *peerTimers) reset() {
	ts.handshakeAttempts.Store(0)
	ts.needAnotherKeepalive.Store(false)
	ts.sentLastMinuteHandshk.Store(false)
}

func (ts *peerTimers) stopAll() {
	ts.retransmitHandshake.del()
	ts.sendKeepalive.del()
	ts.newHandshake.del()
	ts.zeroKeyMaterial.del()
	ts.persistentKeepalive.del()
}

// expiredRetransmitHandshake: no response to our initiation within
// RekeyTimeout; retry up to MaxTimerHandshakes times (90 s), then give up
// and drop what was waiting.
func (ts *peerTimers) expiredRetransmitHandshake() {
	p := ts.p
	if int(ts.handshakeAttempts.Load()) >= MaxTimerHandshakes {
		p.dev.log.Debug("handshake did not complete, giving up", "peer", p.public.String(), "attempts", MaxTimerHandshakes+1)
		ts.sendKeepalive.del()
		p.dropStaged()
		if !ts.zeroKeyMaterial.pending.Load() {
			ts.zeroKeyMaterial.mod(ZeroKeyMaterialAfter)
		}
		return
	}
	ts.handshakeAttempts.Add(1)
	p.sendInitiation(true)
}

// expiredSendKeepalive: we received data and sent nothing back for
// KeepaliveTimeout.
func (ts *peerTimers) expiredSendKeepalive() {
	ts.p.sendKeepalive()
	if ts.needAnotherKeepalive.Swap(false) {
		ts.sendKeepalive.mod(KeepaliveTimeout)
	}
}

// expiredNewHandshake: we sent data and heard nothing for
// KeepaliveTimeout+RekeyTimeout; the session may be dead.
func (ts *peerTimers) expiredNewHandshake() {
	ts.p.sendInitiation(false)
}

// expiredZeroKeyMaterial: no new session for 3×RejectAfterTime; wipe keys.
func (ts *peerTimers) expiredZeroKeyMaterial() {
	ts.p.dev.log.Debug("zeroing key material", "peer", ts.p.public.String())
	ts.p.zeroKeys()
}

func (ts *peerTimers) expiredPersistentKeepalive() {
	if ts.p.persistentKeepalive.Load() > 0 {
		ts.p.sendKeepalive()
	}
}

// Events.

// dataSent: a data (non-keepalive) packet was sent.
func (ts *peerTimers) dataSent() {
	if !ts.newHandshake.pending.Load() {
		ts.newHandshake.mod(KeepaliveTimeout + RekeyTimeout + jitter())
	}
}

// dataReceived: a data packet was received; answer within KeepaliveTimeout.
func (ts *peerTimers) dataReceived() {
	if !ts.sendKeepalive.pending.Load() {
		ts.sendKeepalive.mod(KeepaliveTimeout)
	} else {
		ts.needAnotherKeepalive.Store(true)
	}
}

// anyAuthenticatedPacketSent: any authenticated packet (keepalive, data,
// handshake) was sent; a pending keepalive is no longer needed.
func (ts *peerTimers) anyAuthenticatedPacketSent() { ts.sendKeepalive.del() }

// anyAuthenticatedPacketReceived: the session is alive.
func (ts *peerTimers) anyAuthenticatedPacketReceived() { ts.newHandshake.del() }

// handshakeInitiated: an initiation was sent.
func (ts *peerTimers) handshakeInitiated() {
	ts.retransmitHandshake.mod(RekeyTimeout + jitter())
}

// handshakeComplete: a session was confirmed.
func (ts *peerTimers) handshakeComplete() {
	ts.retransmitHandshake.del()
	ts.handshakeAttempts.Store(0)
	ts.sentLastMinuteHandshk.Store(false)
}

// sessionDerived: new keys exist; schedule their wiping.
func (ts *peerTimers) sessionDerived() {
	ts.zeroKeyMaterial.mod(ZeroKeyMaterialAfter)
}

// anyAuthenticatedPacketTraversal: any authenticated packet went either
// way; restart the persistent keepalive.
func (ts *peerTimers) anyAuthenticatedPacketTraversal() {
	if ka := ts.p.persistentKeepalive.Load(); ka > 0 {
		ts.persistentKeepalive.mod(time.Duration(ka) * time.Second)
	}
}
