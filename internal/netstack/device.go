// Package netstack owns the userspace network stack of a node that has no
// TUN device (`warren daemon --userspace`, and later the embeddable
// library): gVisor's TCP/IP stack joined to the WireGuard engine through a
// tun.Device (Device), the node's addresses in it, and dialing and listening
// there (Stack).
//
// Large segments go end to end where netstack allows. Towards the engine,
// netstack's TCP hands over super-packets of up to 64 KiB (host GSO) that
// Read cuts into MTU-sized packets with tun.SplitTCPVec, as the offloading
// TUN does with the kernel's, copying each segment once from netstack's
// buffers into the engine's. From the engine, Write merges the segments
// of a TCP flow in each batch as the TUN path's GRO does (tun.Merger) and
// copies each merged packet once into one netstack buffer, so netstack's
// TCP takes up to 64 KiB per segment.
// No allocation per packet once warm: packet buffers come from gVisor's
// pools and the queue towards the engine is a channel of pointers.
package netstack

import (
	"errors"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/warrenmesh/warren/internal/tun"
)

// Sizes.
const (
	// BatchSize is the most packets Read returns: enough for one
	// super-packet of gsoMaxSize cut at the smallest MSS (IPv6 at MTU
	// 1280: 1220 bytes, 54 segments) with room for more.
	BatchSize = 128
	// gsoMaxSize is the largest TCP super-packet netstack may hand over.
	gsoMaxSize = 65535 - 60 - 60
	// queueLen bounds the packets waiting for the engine; netstack's
	// senders wait when it is full (back pressure, not loss).
	queueLen = 1024
)

// Stats count what the device moved and dropped.
type Stats struct {
	OutPackets   atomic.Uint64 // packets handed to the engine (after splitting)
	OutSuper     atomic.Uint64 // netstack super-packets split for the engine
	InPackets    atomic.Uint64 // packets from the engine given to netstack (before merging)
	InMerged     atomic.Uint64 // packets given to netstack merged of several
	InMalformed  atomic.Uint64 // packets from the engine dropped: not a well-formed IP packet
	OutDropped   atomic.Uint64 // packets of netstack's dropped: did not fit the engine's buffers
	InAfterClose atomic.Uint64 // packets written after Close
}

// ErrClosed is returned by Read and Write once the device is closed.
var ErrClosed = errors.New("netstack: device closed")

// Device is a tun.Device whose host is a gVisor netstack: it is the link
// endpoint of the stack's one NIC.
type Device struct {
	mtu    atomic.Uint32
	out    chan *stack.PacketBuffer // netstack → engine
	queued chan struct{}            // a token after packets were queued on out (WaitRead)
	closed chan struct{}
	once   sync.Once
	events chan tun.Event

	dmu        sync.RWMutex
	dispatcher stack.NetworkDispatcher

	rmu     sync.Mutex
	pending *stack.PacketBuffer // taken from out but not yet returned by Read
	vec     [][]byte            // a super-packet's views, for splitting

	wmu    sync.Mutex
	merger tun.Merger
	iov    [][]byte // a merged packet's parts, for copying

	stats Stats
}

var (
	_ tun.Device         = (*Device)(nil)
	_ tun.Poller         = (*Device)(nil)
	_ stack.LinkEndpoint = (*linkEndpoint)(nil)
	_ stack.GSOEndpoint  = (*linkEndpoint)(nil)
)

// NewDevice returns a device of the given MTU, up.
func NewDevice(mtu int) *Device {
	d := &Device{
		out:    make(chan *stack.PacketBuffer, queueLen),
		queued: make(chan struct{}, 1),
		closed: make(chan struct{}),
		events: make(chan tun.Event, 1),
		vec:    make([][]byte, 0, 16),
		iov:    make([][]byte, 0, 64),
	}
	d.mtu.Store(uint32(mtu))
	d.events <- tun.EventUp
	return d
}

// Stats returns the device's counters.
func (d *Device) Stats() *Stats { return &d.stats }

// --- tun.Device: the engine's side ---

// Read returns packets netstack sent, super-packets cut into MTU-sized
// packets. It blocks until there is at least one.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	if d.pending == nil {
		select {
		case pkt := <-d.out:
			d.pending = pkt
		case <-d.closed:
			return 0, ErrClosed
		}
	}
	return d.readLocked(bufs, sizes, offset), nil
}

// TryRead is Read without waiting (tun.Poller).
func (d *Device) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	if !d.rmu.TryLock() {
		return 0, nil
	}
	defer d.rmu.Unlock()
	if d.pending == nil {
		select {
		case pkt := <-d.out:
			d.pending = pkt
		case <-d.closed:
			return 0, ErrClosed
		default:
			return 0, nil
		}
	}
	return d.readLocked(bufs, sizes, offset), nil
}

// WaitRead waits until a packet may be queued (tun.Poller). It takes
// nothing from the queue: a packet taken here could be overtaken by the
// ones a concurrent TryRead takes meanwhile.
func (d *Device) WaitRead() error {
	for {
		if len(d.out) > 0 || d.hasPending() {
			return nil
		}
		select {
		case <-d.queued:
			// A token may be older than packets another reader took;
			// look again.
		case <-d.closed:
			return ErrClosed
		}
	}
}

func (d *Device) hasPending() bool {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	return d.pending != nil
}

// CanPoll reports that TryRead and WaitRead work.
func (d *Device) CanPoll() bool { return true }

// readLocked moves d.pending and whatever else is queued into bufs; d.rmu
// held, d.pending set.
func (d *Device) readLocked(bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for n < len(bufs) && n < len(sizes) {
		pkt := d.pending
		if pkt == nil {
			select {
			case pkt = <-d.out:
			default:
				return n
			}
		}
		k, err := d.serialize(pkt, bufs[n:], sizes[n:], offset)
		if err == tun.ErrTooManySegments && n > 0 {
			d.pending = pkt // for the next Read, which has all the buffers
			return n
		}
		d.pending = nil
		pkt.DecRef()
		if err != nil {
			d.stats.OutDropped.Add(1)
			continue
		}
		n += k
	}
	return n
}

// serialize writes pkt into bufs, cutting a super-packet.
func (d *Device) serialize(pkt *stack.PacketBuffer, bufs [][]byte, sizes []int, offset int) (int, error) {
	size := pkt.Size()
	gso := pkt.GSOOptions
	if gso.Type == stack.GSONone || !gso.NeedsCsum {
		if offset > len(bufs[0]) || size > len(bufs[0])-offset {
			return 0, tun.ErrBadOffload
		}
		copyPacket(bufs[0][offset:offset+size], pkt)
		sizes[0] = size
		d.stats.OutPackets.Add(1)
		return 1, nil
	}
	// The segments are copied from the packet's views straight into
	// bufs: no flattening first.
	d.vec = d.vec[:0]
	vl, off := pkt.AsViewList()
	for v, left := vl.Front(), size; v != nil && left > 0; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b = b[off:min(len(b), off+left)]
		d.vec = append(d.vec, b)
		left -= len(b)
		off = 0
	}
	kind := tun.GSOTCPv4
	if gso.Type == stack.GSOTCPv6 {
		kind = tun.GSOTCPv6
	}
	k, err := tun.SplitTCPVec(d.vec, kind, int(gso.MSS), bufs, sizes, offset)
	clear(d.vec) // keep no view reachable
	if err != nil {
		return 0, err
	}
	d.stats.OutPackets.Add(uint64(k))
	if k > 1 {
		d.stats.OutSuper.Add(1)
	}
	return k, nil
}

// copyPacket copies pkt's bytes (headers and payload) to dst, which is
// exactly pkt.Size() long.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) {
	vl, off := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
}

// Write hands the engine's packets to netstack, the segments of each TCP
// flow in the batch merged (tun.Merger, the GRO of the TUN path) and
// copied once into one netstack buffer per merged packet. A packet that is
// not a well-formed IPv4 or IPv6 packet is dropped and counted.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-d.closed:
		d.stats.InAfterClose.Add(uint64(len(bufs)))
		return 0, ErrClosed
	default:
	}
	d.dmu.RLock()
	disp := d.dispatcher
	d.dmu.RUnlock()
	if disp == nil {
		return len(bufs), nil // not attached yet: nobody to give them to
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if offset < tun.MergeOffset {
		// No room for the merger's header: one by one.
		for _, b := range bufs {
			if offset > len(b) {
				d.stats.InMalformed.Add(1)
				continue
			}
			d.deliver(disp, b[offset:])
		}
		return len(bufs), nil
	}
	in := bufs
	for _, b := range bufs {
		if len(b) <= offset {
			in = nil
			break
		}
	}
	if in == nil {
		// Some hold no packet: dropped, the rest merged.
		for _, b := range bufs {
			if len(b) <= offset {
				d.stats.InMalformed.Add(1)
			} else {
				in = append(in, b)
			}
		}
	}
	n := d.merger.Plan(in, offset)
	for k := range n {
		idx, length, segs := d.merger.Packet(k)
		if segs == 1 {
			d.deliver(disp, in[idx][offset:])
			continue
		}
		// A merged packet: its headers were checked and rewritten by
		// the merger; its parts are copied into one view.
		d.iov = d.merger.Pieces(d.iov[:0], in, offset, k)
		v := buffer.NewViewSize(length)
		at := 0
		for _, piece := range d.iov {
			at += copy(v.AsSlice()[at:], piece)
		}
		clear(d.iov) // keep no engine buffer reachable
		proto := header.IPv4ProtocolNumber
		if v.AsSlice()[0]>>4 == 6 {
			proto = header.IPv6ProtocolNumber
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true // see deliver; the TCP checksum is partial
		disp.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
		d.stats.InPackets.Add(uint64(segs))
		d.stats.InMerged.Add(1)
	}
	return len(bufs), nil
}

// deliver hands one packet p to netstack, copied into its buffer, if it
// is a well-formed IP packet; dropped and counted if not. d.wmu held.
func (d *Device) deliver(disp stack.NetworkDispatcher, p []byte) {
	proto, ok := ipPacket(p)
	if !ok {
		d.stats.InMalformed.Add(1)
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	pkt.NetworkProtocolNumber = proto
	// The engine authenticated the packet (AEAD) and checked its source
	// against the peer's allowed IPs: a bad checksum can only come from
	// the sending peer's own flow.
	pkt.RXChecksumValidated = true
	disp.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
	d.stats.InPackets.Add(1)
}

// ipPacket checks that p is one whole IPv4 or IPv6 packet (the lengths
// agree) and returns its network protocol.
func ipPacket(p []byte) (tcpip.NetworkProtocolNumber, bool) {
	if len(p) == 0 {
		return 0, false
	}
	switch p[0] >> 4 {
	case 4:
		h := header.IPv4(p)
		if len(p) < header.IPv4MinimumSize || int(h.HeaderLength()) < header.IPv4MinimumSize ||
			int(h.TotalLength()) != len(p) || int(h.HeaderLength()) > len(p) {
			return 0, false
		}
		return header.IPv4ProtocolNumber, true
	case 6:
		if len(p) < header.IPv6MinimumSize || int(header.IPv6(p).PayloadLength())+header.IPv6MinimumSize != len(p) {
			return 0, false
		}
		return header.IPv6ProtocolNumber, true
	}
	return 0, false
}

// BatchSize is the most packets Read returns.
func (d *Device) BatchSize() int { return BatchSize }

// MTU is the device's MTU; an error once closed.
func (d *Device) MTU() (int, error) {
	select {
	case <-d.closed:
		return 0, ErrClosed
	default:
	}
	return int(d.mtu.Load()), nil
}

// Name names the device.
func (d *Device) Name() (string, error) { return "netstack", nil }

// Events delivers EventUp once; it is closed on Close.
func (d *Device) Events() <-chan tun.Event { return d.events }

// Close stops the device: blocked Reads return, queued packets are freed.
func (d *Device) Close() error {
	d.once.Do(func() {
		close(d.closed)
		close(d.events)
		d.rmu.Lock()
		if d.pending != nil {
			d.pending.DecRef()
			d.pending = nil
		}
		d.rmu.Unlock()
		for {
			select {
			case pkt := <-d.out:
				pkt.DecRef()
			default:
				return
			}
		}
	})
	return nil
}

// --- stack.LinkEndpoint: netstack's side ---

// linkEndpoint is the Device seen from netstack (its method set is
// netstack's, which also has an MTU method).
type linkEndpoint Device

// Link is the device as netstack's link endpoint.
func (d *Device) Link() stack.LinkEndpoint { return (*linkEndpoint)(d) }

// WritePackets queues netstack's packets for the engine, waiting for room.
// The caller keeps its references (the queue takes its own).
func (d *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		select {
		case d.out <- pkt.IncRef():
			n++
			select {
			case d.queued <- struct{}{}:
			default:
			}
		case <-d.closed:
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		}
	}
	return n, nil
}

// MTU is the link MTU netstack derives its MSS from.
func (d *linkEndpoint) MTU() uint32 { return d.mtu.Load() }

// The rest of stack.LinkEndpoint: an IP link without a link header.

func (d *linkEndpoint) SetMTU(mtu uint32)                       { d.mtu.Store(mtu) }
func (d *linkEndpoint) MaxHeaderLength() uint16                 { return 0 }
func (d *linkEndpoint) LinkAddress() tcpip.LinkAddress          { return "" }
func (d *linkEndpoint) SetLinkAddress(tcpip.LinkAddress)        {}
func (d *linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (d *linkEndpoint) AddHeader(*stack.PacketBuffer)           {}
func (d *linkEndpoint) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (d *linkEndpoint) Wait()                                   {}
func (d *linkEndpoint) Close()                                  {}
func (d *linkEndpoint) SetOnCloseAction(func())                 {}
func (d *linkEndpoint) GSOMaxSize() uint32                      { return gsoMaxSize }
func (d *linkEndpoint) SupportedGSO() stack.SupportedGSO        { return stack.HostGSOSupported }
func (d *linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

func (d *linkEndpoint) Attach(disp stack.NetworkDispatcher) {
	d.dmu.Lock()
	d.dispatcher = disp
	d.dmu.Unlock()
}

func (d *linkEndpoint) IsAttached() bool {
	d.dmu.RLock()
	defer d.dmu.RUnlock()
	return d.dispatcher != nil
}
