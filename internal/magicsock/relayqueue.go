package magicsock

import (
	"sync"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// The TCP relay's send side: packets for the relay are queued and written
// by one goroutine, in batches where the relay takes them.

// relaySendQueue bounds the packets waiting to be written to the relay.
// Relay writes go over TCP and may stall; queueing them (dropping when the
// queue is full, as a congested UDP path would) means Send never blocks the
// engine's goroutines on one slow path.
const relaySendQueue = 1024

// relayBufs recycles the buffers of queued relay packets.
var relayBufs = sync.Pool{New: func() any { return new([]byte) }}

// queueRelay copies pkt onto the relay send queue, or drops it.
func (c *Conn) queueRelay(dst pubkey.Node, pkt []byte) {
	bp := relayBufs.Get().(*[]byte)
	b := append((*bp)[:0], pkt...)
	*bp = b
	select {
	case c.relayOut <- relayPacket{src: dst, b: b, buf: bp}:
	default:
		relayBufs.Put(bp)
		c.Stats.RelaySendDrops.Add(1)
	}
}

// relayBatchPackets bounds one batch of the relay writer (and, with
// relay.MaxBatchBytes, its bytes).
const relayBatchPackets = 64

// relayWriter writes queued packets to the relay until stop: to a
// BatchRelay, what has queued up meanwhile as one batch.
func (c *Conn) relayWriter(stop chan struct{}) {
	defer c.running.Done()
	var batch relayBatch
	for {
		select {
		case <-stop:
			return
		case rp := <-c.relayOut:
			c.mu.RLock()
			relay := c.relay
			c.mu.RUnlock()
			br, ok := relay.(BatchRelay)
			if !ok {
				if relay != nil && relay.Send(rp.src, rp.b) == nil {
					c.Stats.RelaySent.Add(1)
				}
				relayBufs.Put(rp.buf)
				continue
			}
			batch.add(rp)
			for more := true; more && len(batch.pkts) < relayBatchPackets && batch.bytes < relayBatchBytes; {
				select {
				case rp = <-c.relayOut:
					batch.add(rp)
				default:
					more = false
				}
			}
			if br.SendBatch(batch.dsts, batch.pkts) == nil {
				c.Stats.RelaySent.Add(uint64(len(batch.pkts)))
			}
			batch.reset()
		}
	}
}

// relayBatchBytes is relay.MaxBatchBytes (package relay is not imported
// here: the layer takes any Relay).
const relayBatchBytes = 64 << 10

// relayBatch is one batch of the relay writer; its slices are reused.
type relayBatch struct {
	dsts  []pubkey.Node
	pkts  [][]byte
	bufs  []*[]byte
	bytes int
}

func (b *relayBatch) add(rp relayPacket) {
	b.dsts = append(b.dsts, rp.src)
	b.pkts = append(b.pkts, rp.b)
	b.bufs = append(b.bufs, rp.buf)
	b.bytes += len(rp.b)
}

// reset returns the batch's buffers to the pool.
func (b *relayBatch) reset() {
	for i, bp := range b.bufs {
		relayBufs.Put(bp)
		b.bufs[i], b.pkts[i] = nil, nil
	}
	b.dsts, b.pkts, b.bufs, b.bytes = b.dsts[:0], b.pkts[:0], b.bufs[:0], 0
}
