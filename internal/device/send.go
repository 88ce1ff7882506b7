package device

import (
	"encoding/binary"
	"net/netip"
	"sync"

	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/wire"
)

// The outbound pipeline:
//
//	readTUN ──(per peer)──> Peer.stage ──> Peer.flushStaged ──┬─> queue.encrypt ──> encryptWorker (parallel)
//	                                                           └─> Peer.run.out ──> sequentialSender (in order)
//
// flushStaged assigns nonces under the peer's sendMu and queues the batch on
// the peer's queue before the crypto queue, so the sequential sender sends in
// nonce order while the crypto workers seal batches in parallel.

// peerBatches groups the packets of one read by peer. Reads almost always
// hold packets of one or a few peers, so a short list searched from the
// most recent entry beats a map.
type peerBatches struct {
	list []*batch
}

// add appends e to p's batch, creating it if needed.
func (g *peerBatches) add(p *Peer, e *elem) {
	for i := len(g.list) - 1; i >= 0; i-- {
		if b := g.list[i]; b.peer == p {
			b.elems = append(b.elems, e)
			return
		}
	}
	b := getBatch(p)
	b.elems = append(b.elems, e)
	g.list = append(g.list, b)
}

// reset forgets the batches (which now belong to their peers).
func (g *peerBatches) reset() {
	clear(g.list)
	g.list = g.list[:0]
}

// outReader is the state of reading the TUN device. The TUN reader uses it
// and, with the inline datapath, so do the receive routines in passing (see
// pollTUN); its mutex keeps each read's packets together, in read order, up
// to their send.
type outReader struct {
	mu     sync.Mutex
	elems  []*elem
	bufs   [][]byte
	sizes  []int
	groups peerBatches
	done   bool // the TUN reader has ended: the device is closed or gone
}

func (o *outReader) init(n int) {
	o.elems, o.bufs, o.sizes = make([]*elem, n), make([][]byte, n), make([]int, n)
}

// refill gives a buffer to the slots whose elems went on with the last
// read; touching all of them each time would cost a cache miss per elem.
func (o *outReader) refill() {
	for i := range o.elems {
		if o.elems[i] == nil {
			o.elems[i] = getElem()
			o.bufs[i] = o.elems[i].buf[:]
		}
	}
}

// release returns the elems to their pool.
func (o *outReader) release() {
	for i, e := range o.elems {
		if e != nil {
			putElem(e)
			o.elems[i], o.bufs[i] = nil, nil
		}
	}
}

// tunPoller is the TUN device as a tun.Poller if the receive routines should
// take its packets in passing: with the inline datapath, where one P
// usually runs both directions (see pollTUN).
func (d *Device) tunPoller() tun.Poller {
	if !d.runToCompletion {
		return nil
	}
	if p, ok := d.tun.(tun.Poller); ok && p.CanPoll() {
		return p
	}
	return nil
}

// readTUN reads plaintext packets and routes them to peers.
func (d *Device) readTUN() {
	defer d.tunWG.Done()
	o := &d.out
	poller := d.tunPoller()
	for {
		var count int
		var err error
		o.mu.Lock()
		o.refill()
		if poller != nil {
			// The lock is not held while waiting, so that a receive
			// routine can take the packets meanwhile.
			count, err = poller.TryRead(o.bufs, o.sizes, MessageTransportStart)
		} else {
			count, err = d.tun.Read(o.bufs, o.sizes, MessageTransportStart)
		}
		d.routeOut(o, count)
		o.mu.Unlock()
		if count == 0 && err == nil && poller != nil {
			if err = poller.WaitRead(); err == nil {
				continue
			}
		}
		if err != nil {
			if d.closed.Load() {
				o.mu.Lock()
				o.release()
				o.done = true
				o.mu.Unlock()
				return
			}
			d.log.Debug("tun read", "err", err)
			if count == 0 {
				// A persistent error (the interface is gone) ends the
				// reader instead of spinning.
				if _, merr := d.tun.MTU(); merr != nil {
					d.log.Error("packet device failed", "err", err)
					o.mu.Lock()
					o.done = true
					o.mu.Unlock()
					close(d.tunGone)
					return
				}
			}
		}
	}
}

// pollTUN sends the packets queued on the TUN device, unless the TUN reader
// is at it. A receive routine calls it after each batch it delivered. With
// one P, the TUN reader, parked in the runtime poller, runs only once the
// receive routine runs out of datagrams or is preempted (every 10 ms), and
// the ACKs the delivered data made TCP send would wait that long: held
// ACKs come out in bursts, which BBR answers with a larger window and so a
// longer queue in front of the tunnel.
func (d *Device) pollTUN(poller tun.Poller) {
	o := &d.out
	if !o.mu.TryLock() {
		return
	}
	if o.done {
		// Nothing more to read; a failed TUN would only repeat its error.
		o.mu.Unlock()
		return
	}
	o.refill()
	count, err := poller.TryRead(o.bufs, o.sizes, MessageTransportStart)
	d.routeOut(o, count)
	o.mu.Unlock()
	if err != nil {
		d.log.Debug("tun poll", "err", err) // the TUN reader handles it
	}
}

// routeOut routes the count packets just read into o to their peers and
// sends them; o.mu is held.
func (d *Device) routeOut(o *outReader, count int) {
	var (
		last    *Peer
		lastDst netip.Addr
	)
	tap := d.tap.Load()
	flt := d.filter.Load()
	elems, groups := o.elems, &o.groups
	for i := 0; i < count; i++ {
		pkt := elems[i].buf[MessageTransportStart : MessageTransportStart+o.sizes[i]]
		dst, ok := destination(pkt)
		p := last
		if !ok {
			p = nil
		} else if dst != lastDst || p == nil {
			// Segments of one super-packet share a destination: look
			// it up once.
			p = d.lookupRoute(dst)
		}
		if p == nil {
			d.Stats.DropNoRoute.Add(1)
			continue
		}
		last, lastDst = p, dst
		if tap != nil && tap.Inner != nil {
			tap.Inner(true, p, pkt)
		}
		if flt != nil {
			flt.RecordTo(pkt, p.id) // replies to flows this node starts may come in
		}
		elems[i].pkt = pkt
		groups.add(p, elems[i])
		elems[i] = nil
	}
	for _, b := range groups.list {
		p := b.peer
		p.stage(b.elems)
		b.elems = b.elems[:0]
		putBatch(b)
		p.flushStaged()
	}
	groups.reset()
}

// destination returns the destination address of an IP packet.
func destination(pkt []byte) (netip.Addr, bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(pkt[16:20])), true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return netip.Addr{}, false
}

// lookupRoute finds the peer whose allowed IPs hold dst (cryptokey routing).
func (d *Device) lookupRoute(dst netip.Addr) *Peer {
	d.routes.RLock()
	p, _ := d.routes.t.Lookup(dst)
	d.routes.RUnlock()
	return p
}

// stage queues packets until a session can carry them; the oldest are
// dropped beyond MaxStagedPackets.
func (p *Peer) stage(es []*elem) {
	p.staged.Lock()
	defer p.staged.Unlock()
	p.staged.elems = append(p.staged.elems, es...)
	if over := len(p.staged.elems) - MaxStagedPackets; over > 0 {
		for _, e := range p.staged.elems[:over] {
			putElem(e)
		}
		p.dev.Stats.DropStaged.Add(uint64(over))
		p.staged.elems = append(p.staged.elems[:0], p.staged.elems[over:]...)
	}
}

func (p *Peer) dropStaged() {
	p.staged.Lock()
	defer p.staged.Unlock()
	for _, e := range p.staged.elems {
		putElem(e)
	}
	p.dev.Stats.DropStaged.Add(uint64(len(p.staged.elems)))
	p.staged.elems = p.staged.elems[:0]
}

// sendKeepalive sends an empty packet unless data is already waiting.
func (p *Peer) sendKeepalive() {
	p.staged.Lock()
	if len(p.staged.elems) == 0 {
		e := getElem()
		e.pkt = e.buf[MessageTransportStart:MessageTransportStart]
		p.staged.elems = append(p.staged.elems, e)
	}
	p.staged.Unlock()
	p.flushStaged()
}

// flushStaged sends the staged packets if a usable session exists, and
// starts a handshake if none does or the current one should be replaced.
func (p *Peer) flushStaged() {
	if !p.isRunning() {
		return
	}
	d := p.dev
	kp := p.keypairs.Current()
	now := d.clock.Now()
	if kp == nil || kp.sendNonce.Load() >= RejectAfterMessages || now.Sub(kp.created) >= RejectAfterTime {
		p.sendInitiation(false)
		return
	}
	// Either side rekeys after RekeyAfterMessages; only the initiator rekeys
	// on age, so that both sides do not start handshakes at once.
	if kp.sendNonce.Load() >= RekeyAfterMessages || (kp.initiator && now.Sub(kp.created) >= RekeyAfterTime) {
		p.sendInitiation(false)
	}

	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.staged.Lock()
	if len(p.staged.elems) == 0 {
		p.staged.Unlock()
		return
	}
	b := getBatch(p)
	for i, e := range p.staged.elems {
		n := kp.sendNonce.Add(1) - 1
		if n >= RejectAfterMessages {
			kp.sendNonce.Store(RejectAfterMessages)
			rest := copy(p.staged.elems, p.staged.elems[i:])
			p.staged.elems = p.staged.elems[:rest]
			p.staged.Unlock()
			p.enqueue(b, outbound)
			p.sendInitiation(false)
			return
		}
		e.counter, e.keypair = n, kp
		b.elems = append(b.elems, e)
	}
	clear(p.staged.elems)
	p.staged.elems = p.staged.elems[:0]
	p.staged.Unlock()
	p.enqueue(b, outbound)
}

type direction int

const (
	outbound direction = iota
	inbound
)

// inlineCryptMax is the largest batch whose crypto is done by the goroutine
// that queues it: for an ACK or a keepalive, handing off to a worker costs
// more (two goroutine wake-ups) than the crypto itself.
const inlineCryptMax = 2

// enqueue hands a batch to the peer's ordered queue and, unless it is small
// enough to seal or open right here, to the device's crypto queue for that
// direction. A batch handed off stays locked until its crypto worker is
// done, so the sequential routine waits for it. If the peer is stopped or
// its queue is full, the batch is dropped.
func (p *Peer) enqueue(b *batch, dir direction) {
	if len(b.elems) == 0 {
		putBatch(b)
		return
	}
	if p.dev.runToCompletion {
		p.complete(b, dir)
		return
	}
	inline := len(b.elems) <= inlineCryptMax
	if inline {
		if dir == outbound {
			sealBatch(b, int(p.dev.mtu.Load()), &b.nonce)
		} else {
			openBatch(b, &b.nonce)
		}
	} else {
		b.Lock()
	}
	p.run.RLock()
	peerQ, cryptQ := p.run.out, p.dev.queue.encrypt
	if dir == inbound {
		peerQ, cryptQ = p.run.in, p.dev.queue.decrypt
	}
	queued := false
	if p.run.running {
		select {
		case peerQ <- b:
			queued = true
		default:
			p.dev.Stats.DropQueueFull.Add(uint64(len(b.elems)))
		}
	}
	p.run.RUnlock()
	if !queued {
		if !inline {
			b.Unlock()
		}
		putBatch(b)
		return
	}
	if !inline {
		cryptQ <- b
	}
}

// complete does all the work of b in the calling goroutine: crypto, then
// sending or delivery. Outbound batches come with p.sendMu held, which
// keeps them in nonce order; inbound ones take p.inbound.
func (p *Peer) complete(b *batch, dir direction) {
	if !p.isRunning() {
		putBatch(b)
		return
	}
	if dir == outbound {
		sealBatch(b, int(p.dev.mtu.Load()), &b.nonce)
		p.outScratch = p.transmit(b, p.outScratch)
	} else {
		openBatch(b, &b.nonce)
		p.inbound.Lock()
		p.inbound.scratch = p.deliver(b, p.inbound.scratch)
		p.inbound.Unlock()
	}
	putBatch(b)
}

// encryptWorker seals batches in place.
func (d *Device) encryptWorker() {
	defer d.cryptWG.Done()
	for b := range d.queue.encrypt {
		sealBatch(b, int(d.mtu.Load()), &b.nonce)
		b.Unlock()
	}
}

// sealBatch pads each plaintext to a multiple of 16 (within mtu), writes
// the transport header in front of it and seals it in place.
func sealBatch(b *batch, mtu int, nonce *[12]byte) {
	for _, e := range b.elems {
		n := len(e.pkt)
		padded := wire.PaddedLen(n, mtu)
		if MessageTransportStart+padded+wire.TagSize > len(e.buf) {
			e.drop = true
			continue
		}
		msg := e.buf[:MessageTransportStart+padded]
		clear(msg[MessageTransportStart+n:])
		wire.PutTransportHeader(msg, wire.TransportHeader{Receiver: e.keypair.remoteIndex, Counter: e.counter})
		binary.LittleEndian.PutUint64(nonce[4:], e.counter)
		sealed := e.keypair.send.Seal(msg[MessageTransportStart:MessageTransportStart], nonce[:], msg[MessageTransportStart:], nil)
		e.pkt = e.buf[:MessageTransportStart+len(sealed)]
	}
}

// sequentialSender sends the peer's batches in order once sealed.
func (p *Peer) sequentialSender(q chan *batch) {
	defer p.run.wg.Done()
	bufs := make([][]byte, 0, 128)
	for b := range q {
		b.Lock()
		bufs = p.transmit(b, bufs)
		b.Unlock()
		putBatch(b)
	}
}

// transmit sends the sealed packets of b (bufs is scratch space, returned
// for reuse).
func (p *Peer) transmit(b *batch, bufs [][]byte) [][]byte {
	bufs = bufs[:0]
	data := false
	for _, e := range b.elems {
		if e.drop {
			continue
		}
		bufs = append(bufs, e.pkt)
		if len(e.pkt) > wire.MinTransportSize {
			data = true
		}
	}
	if len(bufs) > 0 && p.isRunning() {
		if tap := p.dev.tap.Load(); tap != nil && tap.Outer != nil {
			ep := p.Endpoint()
			for _, pkt := range bufs {
				tap.Outer(true, p, ep, pkt)
			}
		}
		if err := p.send(bufs); err != nil {
			p.dev.log.Debug("send", "peer", p.public.String(), "err", err)
		} else {
			p.timers.anyAuthenticatedPacketTraversal()
			p.timers.anyAuthenticatedPacketSent()
			if data {
				p.timers.dataSent()
			}
		}
	}
	clear(bufs)
	return bufs[:0]
}
