package device

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/noise"
)

// Peer is one remote WireGuard peer.
type Peer struct {
	dev    *Device
	public noise.PublicKey

	hs struct {
		sync.Mutex
		h                      noise.Handshake
		lastInitiationConsumed time.Time
		lastSent               time.Time
		lowOrder               bool
	}
	cookies  noise.CookieGenerator
	keypairs keypairs

	endpoint struct {
		sync.RWMutex
		ep conn.Endpoint
	}

	// id identifies the peer to the packet filter: flows are recorded
	// with the peer they were sent to (filter.RecordTo), and ICMP errors
	// about them are accepted only from that peer (filter.AllowFrom).
	id uint64

	rxBytes, txBytes    atomic.Uint64
	rxPackets           atomic.Uint64 // authenticated transport messages (keepalives too)
	txPackets           atomic.Uint64 // transport messages sent
	lastHandshakeNano   atomic.Int64
	persistentKeepalive atomic.Uint32 // seconds

	timers peerTimers

	// staged holds packets waiting for a session.
	staged struct {
		sync.Mutex
		elems []*elem
	}
	sendMu sync.Mutex // orders nonce assignment with queueing

	// Run-to-completion mode (Options.RunToCompletion): scratch space of
	// the goroutines that send (under sendMu) and deliver (under inbound).
	outScratch [][]byte
	inbound    struct {
		sync.Mutex
		scratch [][]byte
	}

	run struct {
		sync.RWMutex
		running bool
		out     chan *batch
		in      chan *batch
		wg      sync.WaitGroup
	}
}

var errTooManyPeers = errors.New("too many peers")

// peerIDs numbers peers for the packet filter (Peer.id), never reusing a
// number.
var peerIDs atomic.Uint64

// newPeer adds a peer; d.ipcMu is held.
func (d *Device) newPeer(pk noise.PublicKey) (*Peer, error) {
	d.peers.Lock()
	defer d.peers.Unlock()
	if len(d.peers.m) >= MaxPeers {
		return nil, errTooManyPeers
	}
	p := &Peer{dev: d, public: pk, id: peerIDs.Add(1)}
	p.hs.h.RemoteStatic = pk
	p.cookies.Init(pk)
	p.timers.init(p)
	p.setStaticLocked(d.staticIdentity())
	d.peers.m[pk] = p
	return p, nil
}

// setStaticLocked precomputes the static-static secret; p.hs need not be
// held by the caller when the peer is not yet shared.
func (p *Peer) setStaticLocked(s *noise.Static) {
	ok := p.hs.h.Precompute(s)
	p.hs.lowOrder = s != nil && !s.Private.IsZero() && !ok
	if p.hs.lowOrder {
		p.dev.log.Warn("peer public key is a low-order point; no handshake will ever be sent to it", "peer", p.public.String())
	}
}

// PublicKey is the peer's static public key.
func (p *Peer) PublicKey() noise.PublicKey { return p.public }

func (p *Peer) isRunning() bool {
	p.run.RLock()
	defer p.run.RUnlock()
	return p.run.running
}

// start launches the peer's sequential routines (device up).
func (p *Peer) start() {
	p.run.Lock()
	defer p.run.Unlock()
	if p.run.running || p.dev.closed.Load() {
		return
	}
	p.run.out = make(chan *batch, QueuePeerSize)
	p.run.in = make(chan *batch, QueuePeerSize)
	p.run.running = true
	p.hs.Lock()
	p.hs.lastSent = p.dev.clock.Now().Add(-RekeyTimeout - time.Second)
	p.hs.Unlock()
	p.timers.reset()
	p.run.wg.Add(2)
	go p.sequentialSender(p.run.out)
	go p.sequentialReceiver(p.run.in)
}

// stop halts the peer and wipes its sessions (device down, peer removal).
func (p *Peer) stop() {
	p.run.Lock()
	if !p.run.running {
		p.run.Unlock()
		return
	}
	p.run.running = false
	close(p.run.out)
	close(p.run.in)
	p.run.Unlock()
	p.run.wg.Wait()
	p.timers.stopAll()
	p.dropStaged()
	p.zeroKeys()
}

// zeroKeys forgets every session and the handshake in progress.
func (p *Peer) zeroKeys() {
	d := p.dev
	p.keypairs.Lock()
	for _, kp := range []*Keypair{p.keypairs.previous, p.keypairs.current, p.keypairs.next} {
		if kp != nil {
			d.index.delete(kp.localIndex)
		}
	}
	p.keypairs.previous, p.keypairs.current, p.keypairs.next = nil, nil, nil
	p.keypairs.Unlock()
	p.hs.Lock()
	d.index.delete(p.hs.h.LocalIndex)
	p.hs.h.Clear()
	p.hs.Unlock()
}

// Endpoint returns the current endpoint (nil if unknown).
func (p *Peer) Endpoint() conn.Endpoint {
	p.endpoint.RLock()
	defer p.endpoint.RUnlock()
	return p.endpoint.ep
}

// setEndpoint records where an authenticated packet came from (roaming).
func (p *Peer) setEndpoint(ep conn.Endpoint) {
	if ep == nil {
		return
	}
	if pa, ok := ep.(conn.PeerAware); ok {
		ep = pa.FromPeer(p.public)
	}
	if pe, ok := ep.(conn.PeerEndpoint); ok && pe.PeerKey() != p.public {
		// Authenticated by this peer's keys but labelled as another
		// peer's path: the label is wrong, the keys are not.
		p.dev.Stats.RoamRefused.Add(1)
		return
	}
	p.endpoint.RLock()
	same := p.endpoint.ep == ep
	p.endpoint.RUnlock()
	if same {
		return
	}
	p.endpoint.Lock()
	p.endpoint.ep = ep
	p.endpoint.Unlock()
}

// send transmits bufs to the peer's endpoint and counts them.
func (p *Peer) send(bufs [][]byte) error {
	ep := p.Endpoint()
	if ep == nil {
		return errNoEndpoint
	}
	d := p.dev
	d.net.RLock()
	if !d.net.up {
		d.net.RUnlock()
		return errDown
	}
	err := d.net.transport.Send(bufs, ep)
	d.net.RUnlock()
	if err != nil {
		return err
	}
	var n uint64
	for _, b := range bufs {
		n += uint64(len(b))
	}
	p.txBytes.Add(n)
	p.txPackets.Add(uint64(len(bufs)))
	return nil
}

var (
	errNoEndpoint = errors.New("peer has no endpoint")
	errDown       = errors.New("device is down")
)

// removePeer stops p and forgets it; d.ipcMu is held.
func (d *Device) removePeer(p *Peer) {
	d.peers.Lock()
	delete(d.peers.m, p.public)
	d.peers.Unlock()
	d.routes.Lock()
	d.routes.t.RemoveValue(p)
	d.routes.Unlock()
	p.stop()
	p.zeroKeys()
}

func (d *Device) removeAllPeers() {
	for _, p := range d.peerList() {
		d.removePeer(p)
	}
}
