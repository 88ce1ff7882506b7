// Package device owns the WireGuard engine: peers and their sessions, the
// handshake state machine with its timers, cryptokey routing, cookies under
// load, and the packet pipelines between a tun.Device and a conn.Transport.
//
// Concurrency: one goroutine reads the TUN device and one per transport
// receive function reads datagrams; both group packets per peer into
// batches. Each batch is queued twice: on a device-wide crypto queue served
// by one worker per CPU, and on its peer's ordered queue, served by the
// peer's sequential sender or receiver, which waits for the batch's crypto to
// finish (the batch mutex is held until then). So crypto runs in parallel
// while each peer's packets keep their order. In run-to-completion mode
// (Options.RunToCompletion, the default on one or two cores) the reading
// goroutine instead seals or opens the batch and sends or delivers it
// itself, in order under the peer's send lock or inbound lock, with no
// hand-off at all; and, if the TUN device is a tun.Poller, a receive
// goroutine also sends what the TUN device has queued after each batch it
// delivered (pollTUN), so that the ACKs the delivered data makes the host
// owe leave at once rather than when the parked TUN reader is next
// scheduled. Handshake messages go to a bounded queue served by handshake workers; its length decides whether the
// device is under load (cookies required). Timers run per peer.
package device

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/warrenmesh/warren/internal/allowedips"
	"github.com/warrenmesh/warren/internal/clock"
	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/filter"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/ratelimit"
	"github.com/warrenmesh/warren/internal/tun"
)

// Options configure a Device. The zero value is usable.
type Options struct {
	Logger *slog.Logger // nil discards
	Clock  Clock        // nil = real time
	// Workers is the number of crypto workers (default GOMAXPROCS).
	Workers int
	// RunToCompletion makes the goroutine that reads a batch of packets
	// (from the TUN device or the transport) also seal or open it and send
	// or deliver it, instead of handing it to the crypto workers and the
	// peer's sequential routines: no hand-offs between goroutines (and
	// cores) per batch, at the price of crypto parallelism within one
	// direction of one flow.
	RunToCompletion bool
}

// EnvDatapath names the environment variable that chooses how packets move
// through the engine: "inline" (Options.RunToCompletion) or "pipeline"
// (crypto workers and per-peer sequential routines). Unset or empty, the
// choice is DefaultRunToCompletion's.
const EnvDatapath = "WARREN_DATAPATH"

// DefaultRunToCompletion is the datapath for hosts where EnvDatapath is not
// set: run to completion on one or two cores, where handing every batch to
// another goroutine (and usually another core, whose caches then fetch the
// packets again) costs more than the crypto it spreads — on the 2-core lab
// of docs/PERFORMANCE.md it moved 30–60% more per second at 25–35% fewer
// CPU seconds per GB — and the pipeline on more cores, where parallel crypto
// lets one flow go past what one core can seal.
func DefaultRunToCompletion() bool { return runtime.GOMAXPROCS(0) <= 2 }

// DatapathFromEnv returns the datapath chosen by EnvDatapath (or the
// default), and an error naming a value it does not know.
func DatapathFromEnv() (runToCompletion bool, err error) {
	switch v := os.Getenv(EnvDatapath); v {
	case "":
		return DefaultRunToCompletion(), nil
	case "inline":
		return true, nil
	case "pipeline":
		return false, nil
	default:
		return DefaultRunToCompletion(), fmt.Errorf("%s=%q: want inline or pipeline", EnvDatapath, v)
	}
}

// Device is one WireGuard interface.
type Device struct {
	log   *slog.Logger
	clock Clock
	tun   tun.Device

	runToCompletion bool // see Options.RunToCompletion

	// ipcMu serializes configuration changes and Up/Down.
	ipcMu sync.Mutex

	net struct {
		sync.RWMutex
		transport conn.Transport
		port      uint16 // configured port (0 = any)
		boundPort uint16
		fwmark    uint32
		up        bool
		recvWG    sync.WaitGroup
	}

	static struct {
		sync.RWMutex
		s *noise.Static // nil when no private key
	}

	peers struct {
		sync.RWMutex
		m map[noise.PublicKey]*Peer
	}

	routes struct {
		sync.RWMutex
		t allowedips.Table[*Peer]
	}

	index   indexTable
	cookies noise.CookieChecker
	limiter *ratelimit.Limiter

	underLoadUntil atomic.Int64 // unix nanos
	mtu            atomic.Int32
	tap            atomic.Pointer[Tap]           // live capture (capture.go); nil: off
	filter         atomic.Pointer[filter.Filter] // inbound packet filter (SetFilter); nil: none

	out outReader // reading the TUN device (send.go)

	queue struct {
		encrypt   chan *batch
		decrypt   chan *batch
		handshake chan *handshakeElem
	}

	closed    atomic.Bool
	closeOnce sync.Once
	tunGone   chan struct{}  // closed when the TUN device fails for good
	tunWG     sync.WaitGroup // TUN reader and events
	hsWG      sync.WaitGroup // handshake workers
	cryptWG   sync.WaitGroup // crypto workers

	Stats Stats
}

// New creates a device on top of a packet device and a transport. The device
// starts down; it goes up on a tun.EventUp or a call to Up.
func New(td tun.Device, tr conn.Transport, opts Options) *Device {
	d := &Device{tun: td, log: opts.Logger, clock: opts.Clock, tunGone: make(chan struct{}), runToCompletion: opts.RunToCompletion}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.clock == nil {
		d.clock = clock.Real
	}
	d.net.transport = tr
	d.peers.m = make(map[noise.PublicKey]*Peer)
	d.index.init()
	d.limiter = ratelimit.New(d.clock.Now)
	mtu, err := td.MTU()
	if err != nil || mtu <= 0 {
		mtu = DefaultMTU
	}
	d.mtu.Store(int32(mtu))

	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	d.queue.encrypt = make(chan *batch, QueueCryptSize)
	d.queue.decrypt = make(chan *batch, QueueCryptSize)
	d.queue.handshake = make(chan *handshakeElem, QueueHandshakeSize)
	for i := 0; i < workers; i++ {
		d.cryptWG.Add(2)
		go d.encryptWorker()
		go d.decryptWorker()
		d.hsWG.Add(1)
		go d.handshakeWorker()
	}
	d.out.init(td.BatchSize())
	d.tunWG.Add(2)
	go d.readTUN()
	go d.tunEvents()
	return d
}

// Up binds the transport and starts the peers.
func (d *Device) Up() error {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	return d.upLocked()
}

func (d *Device) upLocked() error {
	if d.closed.Load() {
		return errors.New("device closed")
	}
	d.net.Lock()
	if d.net.up {
		d.net.Unlock()
		return nil
	}
	err := d.bindLocked()
	if err == nil {
		d.net.up = true
	}
	d.net.Unlock()
	if err != nil {
		return err
	}
	for _, p := range d.peerList() {
		p.start()
		if p.persistentKeepalive.Load() > 0 {
			p.sendKeepalive()
		}
	}
	d.log.Info("interface up", "port", d.Port())
	return nil
}

// Down stops the peers and closes the transport.
func (d *Device) Down() {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	d.downLocked()
}

func (d *Device) downLocked() {
	d.net.Lock()
	wasUp := d.net.up
	d.net.up = false
	bound := d.closeBindLocked()
	d.net.Unlock()
	if bound {
		// Not under d.net: a receive routine may be sending (pollTUN,
		// a flushed stage), and Peer.send read-locks it.
		d.net.recvWG.Wait()
	}
	for _, p := range d.peerList() {
		p.stop()
	}
	if wasUp {
		d.log.Info("interface down")
	}
}

// IsUp reports whether the device is up.
func (d *Device) IsUp() bool {
	d.net.RLock()
	defer d.net.RUnlock()
	return d.net.up
}

// Port is the bound UDP port (0 when down).
func (d *Device) Port() uint16 {
	d.net.RLock()
	defer d.net.RUnlock()
	return d.net.boundPort
}

// bindLocked opens the transport and starts its receive routines; d.net must
// be write-locked.
func (d *Device) bindLocked() error {
	fns, port, err := d.net.transport.Open(d.net.port)
	if err != nil {
		return err
	}
	if d.net.fwmark != 0 {
		if err := d.net.transport.SetMark(d.net.fwmark); err != nil {
			d.log.Warn("cannot set fwmark", "err", err)
		}
	}
	d.net.boundPort = port
	for _, fn := range fns {
		d.net.recvWG.Add(1)
		go d.receive(fn)
	}
	return nil
}

// closeBindLocked closes the transport, which ends the receive routines;
// the caller waits for them (d.net.recvWG) once it has unlocked d.net. It
// reports whether the transport was open. d.net must be write-locked.
func (d *Device) closeBindLocked() bool {
	if d.net.boundPort == 0 {
		return false
	}
	d.net.transport.Close()
	d.net.boundPort = 0
	return true
}

// rebind reopens the transport after a port or mark change while up.
func (d *Device) rebindLocked() error {
	d.net.Lock()
	if !d.net.up {
		d.net.Unlock()
		return nil
	}
	bound := d.closeBindLocked()
	d.net.Unlock()
	if bound {
		d.net.recvWG.Wait() // see downLocked
	}
	d.net.Lock()
	defer d.net.Unlock()
	if !d.net.up {
		return nil
	}
	return d.bindLocked()
}

// Close shuts the device down and waits for every goroutine it started.
func (d *Device) Close() {
	d.closeOnce.Do(func() {
		d.ipcMu.Lock()
		d.closed.Store(true)
		d.downLocked()
		d.ipcMu.Unlock()
		d.tun.Close()
		d.tunWG.Wait()
		close(d.queue.handshake)
		d.hsWG.Wait()
		close(d.queue.encrypt)
		close(d.queue.decrypt)
		d.cryptWG.Wait()
		d.limiter.Close()
		d.removeAllPeers()
		d.static.Lock()
		if d.static.s != nil {
			noise.Zero(d.static.s.Private[:])
			d.static.s = nil
		}
		d.static.Unlock()
		d.log.Info("device closed")
	})
}

// TUNGone is closed when the packet device stops working while the device
// is open (e.g. the interface was deleted); the owner should then Close.
func (d *Device) TUNGone() <-chan struct{} { return d.tunGone }

func (d *Device) tunEvents() {
	defer d.tunWG.Done()
	for ev := range d.tun.Events() {
		if ev&tun.EventMTUUpdate != 0 {
			if mtu, err := d.tun.MTU(); err == nil && mtu > 0 {
				d.mtu.Store(int32(mtu))
			}
		}
		if ev&tun.EventUp != 0 {
			if err := d.Up(); err != nil {
				d.log.Error("cannot bring interface up", "err", err)
			}
		}
		if ev&tun.EventDown != 0 {
			d.Down()
		}
	}
}

func (d *Device) peerList() []*Peer {
	d.peers.RLock()
	defer d.peers.RUnlock()
	ps := make([]*Peer, 0, len(d.peers.m))
	for _, p := range d.peers.m {
		ps = append(ps, p)
	}
	return ps
}

// LookupPeer returns the peer with public key pk.
func (d *Device) LookupPeer(pk noise.PublicKey) *Peer {
	d.peers.RLock()
	defer d.peers.RUnlock()
	return d.peers.m[pk]
}

func (d *Device) staticIdentity() *noise.Static {
	d.static.RLock()
	defer d.static.RUnlock()
	return d.static.s
}

// QueueDepths reports how many batches wait in the device-wide encrypt and
// decrypt queues and how many handshake messages in the handshake queue.
func (d *Device) QueueDepths() (encrypt, decrypt, handshake int) {
	return len(d.queue.encrypt), len(d.queue.decrypt), len(d.queue.handshake)
}

// isUnderLoad reports whether handshake messages must carry a valid MAC2.
func (d *Device) isUnderLoad() bool {
	now := d.clock.Now()
	if len(d.queue.handshake) >= UnderLoadQueueLen {
		d.underLoadUntil.Store(now.Add(UnderLoadAfterTime).UnixNano())
		return true
	}
	return d.underLoadUntil.Load() > now.UnixNano()
}
