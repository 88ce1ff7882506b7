// Package tuntest provides an in-memory tun.Device whose packets are
// exchanged over channels, and helpers to build IP packets, so that the
// engine can be driven and observed by tests (including interop tests
// against wireguard-go) without a kernel interface.
package tuntest

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/warrenmesh/warren/internal/tun"
)

// ChannelTUN is a tun.Device: packets written to Inbound are read by the
// engine as if the host sent them; packets the engine writes appear on
// Outbound.
type ChannelTUN struct {
	Inbound  chan []byte
	Outbound chan []byte
	Dropped  atomic.Uint64 // packets dropped because Outbound was full
	mtu      int
	events   chan tun.Event
	closed   chan struct{}
	once     sync.Once
}

// New returns a device that reports itself up with the given MTU.
func New(mtu int) *ChannelTUN {
	c := &ChannelTUN{
		Inbound:  make(chan []byte, 1024),
		Outbound: make(chan []byte, 1024),
		mtu:      mtu,
		events:   make(chan tun.Event, 1),
		closed:   make(chan struct{}),
	}
	c.events <- tun.EventUp
	return c
}

var errClosed = errors.New("tuntest: closed")

func (c *ChannelTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-c.closed:
		return 0, errClosed
	case p := <-c.Inbound:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	}
}

func (c *ChannelTUN) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		select {
		case <-c.closed:
			return i, errClosed
		case c.Outbound <- p:
		default:
			// Like a kernel interface with a full queue: drop, never block.
			c.Dropped.Add(1)
		}
	}
	return len(bufs), nil
}

func (c *ChannelTUN) BatchSize() int           { return 1 }
func (c *ChannelTUN) MTU() (int, error)        { return c.mtu, nil }
func (c *ChannelTUN) Name() (string, error)    { return "tuntest", nil }
func (c *ChannelTUN) Events() <-chan tun.Event { return c.events }

func (c *ChannelTUN) Close() error {
	c.once.Do(func() {
		close(c.closed)
		close(c.events)
	})
	return nil
}

func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = (sum >> 16) + (sum & 0xffff)
	}
	return ^uint16(sum)
}

// UDPPacket builds an IPv4 or IPv6 UDP packet with valid checksums.
func UDPPacket(src, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	var pseudo []byte
	var hdr []byte
	if src.Addr().Is4() {
		s, d := src.Addr().As4(), dst.Addr().As4()
		hdr = make([]byte, 20)
		hdr[0] = 0x45
		binary.BigEndian.PutUint16(hdr[2:], uint16(20+len(udp)))
		hdr[8], hdr[9] = 64, 17
		copy(hdr[12:], s[:])
		copy(hdr[16:], d[:])
		binary.BigEndian.PutUint16(hdr[10:], checksum(hdr, 0))
		pseudo = append(append(append([]byte{}, s[:]...), d[:]...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		hdr = make([]byte, 40)
		hdr[0] = 0x60
		binary.BigEndian.PutUint16(hdr[4:], uint16(len(udp)))
		hdr[6], hdr[7] = 17, 64
		copy(hdr[8:], s[:])
		copy(hdr[24:], d[:])
		pseudo = append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, byte(len(udp)>>8), byte(len(udp)), 0, 0, 0, 17)
	}
	var sum uint32
	for i := 0; i+1 < len(pseudo); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pseudo[i:]))
	}
	cs := checksum(udp, sum)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], cs)
	return append(hdr, udp...)
}
