package device

import (
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/tun/tuntest"
)

// parkedTUN is a ChannelTUN that is a tun.Poller whose WaitRead never
// returns before Close: the engine's TUN reader, once it has found the
// device empty, stays parked, as it does with one P while a receive routine
// is busy. Only pollTUN can then take what the host queues.
type parkedTUN struct {
	*tuntest.ChannelTUN
	closed chan struct{}
	tries  atomic.Int64 // TryRead calls
}

func (p *parkedTUN) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	p.tries.Add(1)
	select {
	case pkt := <-p.Inbound:
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, nil
	default:
		return 0, nil
	}
}

func (p *parkedTUN) CanPoll() bool { return true }

func (p *parkedTUN) WaitRead() error {
	<-p.closed
	return os.ErrClosed
}

func (p *parkedTUN) Close() error {
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	return p.ChannelTUN.Close()
}

// TestPollTUN: with the inline datapath, what the host queues on the TUN
// device goes out when datagrams come in, even if the TUN reader does not
// run (the ACKs a receiver owes leave with the data they answer).
func TestPollTUN(t *testing.T) {
	clock := realClock
	a := newNode(t, clock, 2) // pipeline datapath, reads its TUN as usual
	var parked *parkedTUN
	b := newNodeWith(t, clock, 3, func(c *tuntest.ChannelTUN) tun.Device {
		parked = &parkedTUN{ChannelTUN: c, closed: make(chan struct{})}
		return parked
	})
	if !b.dev.runToCompletion {
		t.Fatal("node 3 does not run the inline datapath")
	}
	connect(t, a, b, 0)
	connect(t, b, a, 0)
	ping(t, a, b, false) // a's handshake; b's TUN reader is parked by now
	// Whatever else the handshake made a send (a keepalive may race the
	// data) must have come in, and been followed by its poll, before b's
	// host queues a packet, or that poll would take it.
	settled := func() (int64, uint64) { return parked.tries.Load(), a.tr.sent[4].Load() + a.tr.sent[1].Load() }
	deadline := time.Now().Add(5 * time.Second)
	for quiet, last := 0, [2]uint64{}; quiet < 5; {
		if time.Now().After(deadline) {
			t.Fatal("the handshake's traffic did not settle")
		}
		time.Sleep(10 * time.Millisecond)
		tries, sent := settled()
		if now := [2]uint64{uint64(tries), sent}; now != last {
			last, quiet = now, 0
		} else {
			quiet++
		}
	}

	reply := tuntest.UDPPacket(netip.AddrPortFrom(b.addr, 5000), netip.AddrPortFrom(a.addr, 4000), []byte("ack"))
	b.tun.Inbound <- reply
	// Nothing reads b's TUN until a datagram comes in.
	noPacket(t, a, 100*time.Millisecond)
	if len(b.tun.Inbound) != 1 {
		t.Fatalf("b's queued packet was taken (%d left) before any datagram came in", len(b.tun.Inbound))
	}
	ping(t, a, b, false)
	select {
	case got := <-a.tun.Outbound:
		if string(got) != string(reply) {
			t.Fatalf("a got % x, want b's queued packet", got[:min(len(got), 40)])
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("b's queued packet did not go out after a datagram came in; b: %s", statsString(&b.dev.Stats))
	}
}
