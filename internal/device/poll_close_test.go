package device

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
)

// gatedTUN is parkedTUN whose TryRead, once armed, waits for the test
// before it returns: it holds a receive routine in pollTUN, between the
// batch it delivered and the send of what it read from the TUN (a window
// of decrypt + TUN write + TryRead + seal in real runs).
// Only the first TryRead after arming waits, whether or not the test is
// already waiting for it: entered is buffered (an unbuffered send with a
// default case let the routine through when the test goroutine was late,
// and the test then waited for nothing).
type gatedTUN struct {
	parkedTUN
	armed   chan struct{} // closed: the next TryRead waits
	gated   atomic.Bool   // that TryRead has come
	entered chan struct{} // buffered (1): it has come
	release chan struct{}
}

func (g *gatedTUN) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-g.armed:
		if g.gated.CompareAndSwap(false, true) {
			g.entered <- struct{}{}
			<-g.release
		}
	default:
	}
	return g.parkedTUN.TryRead(bufs, sizes, offset)
}

// TestPollTUNClose: Close (or a rebind) write-locks d.net and waits for the
// receive routines; a receive routine that is in pollTUN then sends what it
// read, and Peer.send read-locks d.net: neither goes on.
func TestPollTUNClose(t *testing.T) {
	clock := realClock
	a := newNode(t, clock, 2)
	var g *gatedTUN
	b := newNodeWith(t, clock, 3, func(c *tuntest.ChannelTUN) tun.Device {
		g = &gatedTUN{parkedTUN: parkedTUN{ChannelTUN: c, closed: make(chan struct{})},
			armed: make(chan struct{}), entered: make(chan struct{}, 1), release: make(chan struct{})}
		return g
	})
	connect(t, a, b, 0)
	connect(t, b, a, 0)
	ping(t, a, b, false)

	// b's host has a reply queued; a datagram comes in, and the receive
	// routine that delivers it stops in pollTUN.
	b.tun.Inbound <- tuntest.UDPPacket(netip.AddrPortFrom(b.addr, 5000), netip.AddrPortFrom(a.addr, 4000), []byte("ack"))
	close(g.armed)
	a.tun.Inbound <- tuntest.UDPPacket(netip.AddrPortFrom(a.addr, 4000), netip.AddrPortFrom(b.addr, 5000), []byte("data"))
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no receive routine reached pollTUN")
	}

	closed := make(chan struct{})
	go func() { b.dev.Close(); close(closed) }()
	// Close gets as far as waiting for the receive routines (with d.net
	// write-locked, before a fix).
	time.Sleep(100 * time.Millisecond)
	close(g.release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "%s\n", buf)
		fmt.Fprintln(os.Stderr, "FAIL: TestPollTUNClose: Device.Close deadlocked: the receive routine waits in Peer.send for d.net.RLock, Close holds d.net and waits for it (stacks above)")
		os.Exit(1) // the cleanups would wait for Close forever
	}
}
