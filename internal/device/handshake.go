package device

import (
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/tai64n"
	"github.com/warrenmesh/warren/internal/wire"
)

func randUint32() uint32 {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

// jitter spreads timer deadlines (0 to RekeyTimeoutJitterMax). It runs on
// the send path when a timer is re-armed, so it must not allocate; it needs
// no cryptographic strength.
func jitter() time.Duration {
	return mrand.N(RekeyTimeoutJitterMax)
}

// sourceBytes is the sender's address as bound into cookies.
func sourceBytes(ep conn.Endpoint) (b [18]byte) {
	ap := ep.Addr()
	a := ap.Addr().As16()
	copy(b[:16], a[:])
	binary.LittleEndian.PutUint16(b[16:], ap.Port())
	return b
}

// sendInitiation starts a handshake. It does nothing when one was sent
// less than RekeyTimeout ago, nor, unless it is the retry, while a retry is
// due: traffic arriving in step at both ends (both pinging each other once
// a second) would otherwise start both ends' next attempts at the same
// instant, RekeyTimeout after the last, and initiations that cross cancel
// each other (each end answers the other's, which replaces its own
// attempt); the retries' jitter sets the two ends apart.
func (p *Peer) sendInitiation(isRetry bool) {
	d := p.dev
	if !isRetry {
		p.timers.handshakeAttempts.Store(0)
		if p.timers.retransmitHandshake.pending.Load() {
			return
		}
	}
	if !p.isRunning() {
		return
	}
	s := d.staticIdentity()
	now := d.clock.Now()
	p.hs.Lock()
	if p.hs.lowOrder || s == nil {
		p.hs.Unlock()
		return
	}
	if now.Sub(p.hs.lastSent) < RekeyTimeout {
		p.hs.Unlock()
		return
	}
	p.hs.lastSent = now
	d.index.delete(p.hs.h.LocalIndex)
	idx := d.index.newIndex(p)
	var msg wire.Initiation
	err := s.CreateInitiation(&p.hs.h, idx, tai64n.FromTime(now), &msg)
	p.hs.Unlock()
	if err != nil {
		d.index.delete(idx)
		d.log.Debug("cannot create initiation", "peer", p.public.String(), "err", err)
		return
	}
	var buf [wire.InitiationSize]byte
	out := msg.Marshal(buf[:])
	p.cookies.AddMACs(out, now)
	p.timers.anyAuthenticatedPacketTraversal()
	p.timers.anyAuthenticatedPacketSent()
	p.timers.handshakeInitiated()
	if err := p.send([][]byte{out}); err != nil {
		d.log.Debug("send initiation", "peer", p.public.String(), "err", err)
		return
	}
	d.Stats.HandshakesSent.Add(1)
}

// testHookInitiationUnlocked, when set (by tests only), runs in
// handleInitiation right after the peer's handshake lock is released: a
// test makes a second initiation overtake the first there.
var testHookInitiationUnlocked func()

// handshakeWorker processes handshake and cookie messages.
func (d *Device) handshakeWorker() {
	defer d.hsWG.Done()
	for he := range d.queue.handshake {
		d.handleHandshake(he)
	}
}

func (d *Device) handleHandshake(he *handshakeElem) {
	msg := he.msg[:he.n]
	now := d.clock.Now()
	if he.typ == wire.TypeCookieReply {
		var r wire.CookieReply
		if r.Unmarshal(msg) != nil {
			d.Stats.DropInvalid.Add(1)
			return
		}
		e, ok := d.index.lookup(r.Receiver)
		if !ok || !e.peer.cookies.ConsumeReply(&r, now) {
			d.Stats.DropCookieReply.Add(1)
			return
		}
		d.Stats.CookieRepliesTaken.Add(1)
		return
	}
	if !d.cookies.CheckMAC1(msg) {
		d.Stats.DropMAC1.Add(1)
		return
	}
	if d.isUnderLoad() {
		src := sourceBytes(he.ep)
		if !d.cookies.CheckMAC2(msg, src[:], now) {
			d.sendCookieReply(msg, he, src[:], now)
			return
		}
		if !d.limiter.Allow(he.ep.Addr().Addr()) {
			d.Stats.DropRateLimited.Add(1)
			return
		}
	}
	switch he.typ {
	case wire.TypeInitiation:
		d.handleInitiation(msg, he.ep, now)
	case wire.TypeResponse:
		d.handleResponse(msg, he.ep, now)
	}
}

func (d *Device) sendCookieReply(msg []byte, he *handshakeElem, src []byte, now time.Time) {
	d.Stats.DropNeedCookie.Add(1)
	sender := binary.LittleEndian.Uint32(msg[4:8])
	var r wire.CookieReply
	if err := d.cookies.CreateReply(msg, sender, src, now, &r); err != nil {
		return
	}
	var buf [wire.CookieReplySize]byte
	d.net.RLock()
	defer d.net.RUnlock()
	if d.net.up {
		if err := d.net.transport.Send([][]byte{r.Marshal(buf[:])}, he.ep); err == nil {
			d.Stats.CookieRepliesSent.Add(1)
		}
	}
}

func (d *Device) handleInitiation(msg []byte, ep conn.Endpoint, now time.Time) {
	var m wire.Initiation
	if m.Unmarshal(msg) != nil {
		d.Stats.DropInvalid.Add(1)
		return
	}
	s := d.staticIdentity()
	var ci noise.ConsumedInitiation
	if err := s.BeginInitiation(&m, &ci); err != nil {
		d.Stats.DropHandshake.Add(1)
		return
	}
	p := d.LookupPeer(ci.Static)
	if p == nil {
		d.Stats.DropUnknownPeer.Add(1)
		return
	}
	if !p.isRunning() {
		return
	}
	p.hs.Lock()
	if now.Sub(p.hs.lastInitiationConsumed) < HandshakeInitiationRate {
		p.hs.Unlock()
		d.Stats.DropFlood.Add(1)
		return
	}
	if err := ci.FinishInitiation(&p.hs.h); err != nil {
		p.hs.Unlock()
		if err == noise.ErrReplay {
			d.Stats.DropTimestamp.Add(1)
		} else {
			d.Stats.DropHandshake.Add(1)
		}
		return
	}
	p.hs.lastInitiationConsumed = now
	d.index.delete(p.hs.h.LocalIndex)
	idx := d.index.newIndex(p)
	var resp wire.Response
	err := s.CreateResponse(&p.hs.h, idx, &resp)
	var kp *Keypair
	if err == nil {
		kp, err = p.deriveSession(now)
	}
	if err == nil {
		// Installed before the lock is released, so sessions are
		// installed in the order their initiations were accepted: the
		// newest stays next (the initiator completes only its latest).
		p.installResponderSession(kp)
	}
	p.hs.Unlock()
	if testHookInitiationUnlocked != nil {
		testHookInitiationUnlocked()
	}
	if err != nil {
		d.index.delete(idx)
		d.Stats.DropHandshake.Add(1)
		return
	}
	p.setEndpoint(ep)
	var buf [wire.ResponseSize]byte
	out := resp.Marshal(buf[:])
	p.cookies.AddMACs(out, now)
	p.timers.anyAuthenticatedPacketTraversal()
	p.timers.anyAuthenticatedPacketSent()
	if err := p.send([][]byte{out}); err != nil {
		d.log.Debug("send response", "peer", p.public.String(), "err", err)
	}
}

func (d *Device) handleResponse(msg []byte, ep conn.Endpoint, now time.Time) {
	var m wire.Response
	if m.Unmarshal(msg) != nil {
		d.Stats.DropInvalid.Add(1)
		return
	}
	e, ok := d.index.lookup(m.Receiver)
	if !ok || e.keypair != nil {
		d.Stats.DropHandshake.Add(1)
		return
	}
	p := e.peer
	if !p.isRunning() {
		return
	}
	s := d.staticIdentity()
	p.hs.Lock()
	err := s.ConsumeResponse(&p.hs.h, &m)
	var kp *Keypair
	if err == nil {
		kp, err = p.deriveSession(now)
	}
	if err == nil {
		p.installInitiatorSession(kp) // in order with handleInitiation's
	}
	p.hs.Unlock()
	if err != nil {
		d.Stats.DropHandshake.Add(1)
		return
	}
	p.setEndpoint(ep)
	p.timers.anyAuthenticatedPacketTraversal()
	p.timers.anyAuthenticatedPacketReceived()
	p.timers.handshakeComplete()
	p.sendKeepalive() // confirms the session, carrying staged data if any
}

// deriveSession turns a completed handshake into a Keypair bound to the
// handshake's index; p.hs is held.
func (p *Peer) deriveSession(now time.Time) (*Keypair, error) {
	send, recv, initiator, err := p.hs.h.DeriveKeys()
	if err != nil {
		return nil, err
	}
	kp := newKeypair(p, send, recv, initiator, p.hs.h.LocalIndex, p.hs.h.RemoteIndex, now)
	p.dev.index.bind(kp.localIndex, kp)
	// The index now belongs to the session, not the handshake.
	p.hs.h.LocalIndex = 0
	p.lastHandshakeNano.Store(now.UnixNano())
	p.dev.Stats.HandshakesDone.Add(1)
	p.timers.sessionDerived()
	return kp, nil
}

// installInitiatorSession and installResponderSession run with p.hs held
// (lock order: p.hs, then p.keypairs).
func (p *Peer) installInitiatorSession(kp *Keypair) {
	d := p.dev
	p.keypairs.Lock()
	defer p.keypairs.Unlock()
	old := p.keypairs.previous
	if next := p.keypairs.next; next != nil {
		// An unconfirmed responder session: keep it as previous so late
		// packets on it are still accepted.
		p.keypairs.previous = next
		p.keypairs.next = nil
		if cur := p.keypairs.current; cur != nil {
			d.index.delete(cur.localIndex)
		}
	} else {
		p.keypairs.previous = p.keypairs.current
	}
	if old != nil && old != p.keypairs.previous {
		d.index.delete(old.localIndex)
	}
	p.keypairs.current = kp
}

func (p *Peer) installResponderSession(kp *Keypair) {
	d := p.dev
	p.keypairs.Lock()
	defer p.keypairs.Unlock()
	if next := p.keypairs.next; next != nil {
		d.index.delete(next.localIndex)
	}
	if prev := p.keypairs.previous; prev != nil {
		d.index.delete(prev.localIndex)
	}
	p.keypairs.previous = nil
	p.keypairs.next = kp
}
