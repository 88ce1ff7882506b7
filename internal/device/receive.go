package device

import (
	"encoding/binary"
	"errors"
	"net"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/wire"
)

// The inbound pipeline:
//
//	receive ──transport──(per peer)──┬─> queue.decrypt ──> decryptWorker (parallel)
//	   │                             └─> Peer.run.in ──> sequentialReceiver (in order) ──> TUN
//	   └──handshake/cookie──> queue.handshake ──> handshakeWorker
//
// Nothing unauthenticated is ever answered, except a cookie reply to a
// handshake with a valid MAC1 while under load.

type handshakeElem struct {
	typ byte
	msg [wire.InitiationSize]byte
	n   int
	ep  conn.Endpoint
}

// receive reads datagrams from one receive function until the transport
// closes.
func (d *Device) receive(fn conn.ReceiveFunc) {
	defer d.net.recvWG.Done()
	n := d.net.transport.BatchSize()
	elems := make([]*elem, n)
	bufs := make([][]byte, n)
	sizes := make([]int, n)
	eps := make([]conn.Endpoint, n)
	var groups peerBatches
	poller := d.tunPoller()
	failures := 0
	for {
		// Only the slots whose elems went on are refilled (see outReader.refill).
		for i := range elems {
			if elems[i] == nil {
				elems[i] = getElem()
				bufs[i] = elems[i].buf[:]
			}
		}
		count, err := fn(bufs, sizes, eps)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, conn.ErrClosed) {
				for _, e := range elems {
					if e != nil {
						putElem(e)
					}
				}
				return
			}
			// A transient socket error (e.g. ENOBUFS) must not end
			// reception; back off if it persists.
			failures++
			d.log.Debug("receive", "err", err)
			if failures > 16 {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		failures = 0
		var (
			lastIndex                     uint32
			lastEntry                     indexEntry
			haveLast, lastOK, lastExpired bool
		)
		tap := d.tap.Load()
		for i := 0; i < count; i++ {
			pkt := bufs[i][:sizes[i]]
			if tap != nil && tap.Outer != nil {
				d.tapOuterIn(tap, pkt, eps[i])
			}
			typ, err := wire.Type(pkt)
			if err != nil {
				d.Stats.DropInvalid.Add(1)
				continue
			}
			if typ != wire.TypeTransport {
				d.queueHandshake(typ, pkt, eps[i])
				continue
			}
			h, _, _ := wire.ParseTransport(pkt)
			// Datagrams of one read mostly share a session: look it up
			// and check its age once per run.
			if !haveLast || h.Receiver != lastIndex {
				entry, ok := d.index.lookup(h.Receiver)
				lastIndex, haveLast, lastEntry, lastOK = h.Receiver, true, entry, ok && entry.keypair != nil
				if lastOK && d.clock.Now().Sub(entry.keypair.created) >= RejectAfterTime {
					lastOK, lastExpired = false, true
				} else {
					lastExpired = false
				}
			}
			if !lastOK {
				if lastExpired {
					d.Stats.DropExpiredKey.Add(1)
				} else {
					d.Stats.DropNoSession.Add(1)
				}
				continue
			}
			entry := lastEntry
			e := elems[i]
			elems[i] = nil
			e.pkt, e.counter, e.keypair, e.ep = pkt, h.Counter, entry.keypair, eps[i]
			groups.add(entry.peer, e)
		}
		for _, b := range groups.list {
			b.peer.enqueue(b, inbound)
		}
		groups.reset()
		if poller != nil {
			d.pollTUN(poller)
		}
	}
}

// tapOuterIn shows a received datagram to the capture tap, with the peer
// its receiver index belongs to (if any).
func (d *Device) tapOuterIn(tap *Tap, pkt []byte, ep conn.Endpoint) {
	var p *Peer
	if typ, err := wire.Type(pkt); err == nil && typ == wire.TypeTransport {
		if h, _, err := wire.ParseTransport(pkt); err == nil {
			if entry, ok := d.index.lookup(h.Receiver); ok {
				p = entry.peer
			}
		}
	}
	tap.Outer(false, p, ep, pkt)
}

func (d *Device) queueHandshake(typ byte, pkt []byte, ep conn.Endpoint) {
	he := &handshakeElem{typ: typ, n: len(pkt), ep: ep}
	copy(he.msg[:], pkt)
	select {
	case d.queue.handshake <- he:
	default:
		d.Stats.DropHandshakeQueue.Add(1)
	}
}

// decryptWorker opens batches in place.
func (d *Device) decryptWorker() {
	defer d.cryptWG.Done()
	for b := range d.queue.decrypt {
		openBatch(b, &b.nonce)
		b.Unlock()
	}
}

// openBatch authenticates and decrypts each transport message in place,
// leaving the plaintext in e.pkt, or marking the element dropped.
func openBatch(b *batch, nonce *[12]byte) {
	for _, e := range b.elems {
		binary.LittleEndian.PutUint64(nonce[4:], e.counter)
		sealed := e.pkt[wire.TransportDataOffset:]
		plain, err := e.keypair.recv.Open(sealed[:0], nonce[:], sealed, nil)
		if err != nil {
			e.drop = true
			continue
		}
		e.pkt = plain
	}
}

// sequentialReceiver checks replay, roams, runs timers and writes the
// peer's packets to the TUN device in order. Per-session and per-peer work
// (promotion, roaming, timers, the routing-table lock) is done once per
// batch, not once per packet.
func (p *Peer) sequentialReceiver(q chan *batch) {
	defer p.run.wg.Done()
	bufs := make([][]byte, 0, 128)
	for b := range q {
		b.Lock()
		bufs = p.deliver(b, bufs)
		b.Unlock()
		putBatch(b)
	}
}

// deliver checks replay and the inner packets of the opened batch b, runs
// the timers and writes what passes to the TUN device (bufs is scratch
// space, returned for reuse).
func (p *Peer) deliver(b *batch, bufs [][]byte) [][]byte {
	d := p.dev
	bufs = bufs[:0]
	var (
		rx, rxn       uint64
		lastKP        *Keypair
		lastEP        conn.Endpoint
		authenticated bool
		data          bool
	)
	for _, e := range b.elems {
		if e.drop {
			d.Stats.DropDecrypt.Add(1)
			continue
		}
		kp := e.keypair
		kp.replayMu.Lock()
		ok := kp.replay.ValidateCounter(e.counter, RejectAfterMessages)
		kp.replayMu.Unlock()
		if !ok {
			d.Stats.DropReplay.Add(1)
			e.drop = true
			continue
		}
		if kp != lastKP {
			lastKP = kp
			if p.receivedWithKeypair(kp) {
				p.timers.handshakeComplete()
				p.flushStaged()
			}
		}
		lastEP = e.ep
		authenticated = true
		rx += uint64(len(e.pkt) + wire.MinTransportSize)
		rxn++
		if len(e.pkt) == 0 {
			e.drop = true // keepalive: authenticated, nothing to deliver
			continue
		}
		data = true
	}
	if authenticated {
		p.rxBytes.Add(rx)
		p.rxPackets.Add(rxn)
		p.keepKeyFresh(lastKP)
		p.setEndpoint(lastEP)
		p.timers.anyAuthenticatedPacketTraversal()
		p.timers.anyAuthenticatedPacketReceived()
	}
	if data {
		p.timers.dataReceived()
		flt := d.filter.Load()
		d.routes.RLock()
		for _, e := range b.elems {
			if e.drop {
				continue
			}
			if pkt, ok := p.checkInnerLocked(e.pkt); ok {
				if flt != nil {
					if v := flt.CheckFrom(pkt, p.id); v != filter.Accept {
						if v == filter.DropDestination {
							d.Stats.DropDestination.Add(1)
						} else {
							d.Stats.DropPolicy.Add(1)
						}
						continue
					}
				}
				bufs = append(bufs, e.buf[:wire.TransportDataOffset+len(pkt)])
			}
		}
		d.routes.RUnlock()
	}
	if len(bufs) > 0 && p.isRunning() {
		if tap := d.tap.Load(); tap != nil && tap.Inner != nil {
			for _, b := range bufs {
				tap.Inner(false, p, b[wire.TransportDataOffset:])
			}
		}
		if _, err := d.tun.Write(bufs, wire.TransportDataOffset); err != nil && !d.closed.Load() {
			d.log.Debug("tun write", "err", err)
		}
	}
	clear(bufs)
	return bufs[:0]
}

// checkInnerLocked validates a decrypted packet: a well-formed IPv4 or IPv6
// header, trimmed of padding, whose source address this peer may use.
// d.routes must be read-locked.
func (p *Peer) checkInnerLocked(pkt []byte) ([]byte, bool) {
	d := p.dev
	var owner *Peer
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		n := int(binary.BigEndian.Uint16(pkt[2:4]))
		if n < 20 || n > len(pkt) {
			d.Stats.DropBadInner.Add(1)
			return nil, false
		}
		pkt = pkt[:n]
		owner, _ = d.routes.t.LookupIPv4([4]byte(pkt[12:16]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		n := 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if n > len(pkt) {
			d.Stats.DropBadInner.Add(1)
			return nil, false
		}
		pkt = pkt[:n]
		owner, _ = d.routes.t.LookupIPv6([16]byte(pkt[8:24]))
	default:
		d.Stats.DropBadInner.Add(1)
		return nil, false
	}
	if owner != p {
		d.Stats.DropSourceAddr.Add(1)
		return nil, false
	}
	return pkt, true
}

// receivedWithKeypair promotes a responder's next session once the
// initiator used it. It reports whether a promotion happened.
func (p *Peer) receivedWithKeypair(kp *Keypair) bool {
	p.keypairs.RLock()
	isNext := p.keypairs.next == kp
	p.keypairs.RUnlock()
	if !isNext {
		return false
	}
	p.keypairs.Lock()
	defer p.keypairs.Unlock()
	if p.keypairs.next != kp {
		return false
	}
	if old := p.keypairs.previous; old != nil {
		p.dev.index.delete(old.localIndex)
	}
	p.keypairs.previous = p.keypairs.current
	p.keypairs.current = kp
	p.keypairs.next = nil
	return true
}

// keepKeyFresh starts a handshake when, as initiator, we receive on a key
// nearing its end of life, so the responder never has to stop accepting it.
func (p *Peer) keepKeyFresh(kp *Keypair) {
	if !kp.initiator || p.keypairs.Current() != kp {
		return
	}
	if p.dev.clock.Now().Sub(kp.created) >= RekeyOnReceiveAge && !kp.rekeyOnReceive.Swap(true) {
		p.sendInitiation(false)
	}
}
