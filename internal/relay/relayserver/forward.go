package relayserver

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
)

// The forward path: a client's send frame is checked (rate, destination),
// its packet copied into a pooled buffer and queued towards the
// destination's session, whose writer frames it into the batch of its
// queue drain and returns the buffer. Nothing on it allocates per packet
// (BenchmarkForward).

// item is one frame queued towards a client.
type item struct {
	typ  byte
	key  pubkey.Node
	data []byte  // packet (relay.FrameRecv) or the other payload after the key
	buf  *[]byte // data's pooled buffer (packetBufs), or nil
}

// packetBufs recycles the copies of relayed packets.
var packetBufs = sync.Pool{New: func() any { b := make([]byte, 0, relay.InitialReadBuf); return &b }}

// release returns the item's buffer to the pool.
func (it item) release() {
	if it.buf != nil {
		packetBufs.Put(it.buf)
	}
}

// enqueue queues a frame without blocking; false if the queue is full
// (the caller still owns it.buf).
func (c *client) enqueue(it item) bool {
	n := int64(len(it.data))
	c.qmu.Lock()
	if len(c.queue) >= c.s.o.QueuePackets || c.qlen.Load()+n > c.s.o.QueueBytes {
		c.qmu.Unlock()
		return false
	}
	c.queue = append(c.queue, it)
	c.qlen.Add(n)
	first := len(c.queue) == 1
	c.qmu.Unlock()
	if first {
		select {
		case c.wake <- struct{}{}:
		default: // the writer has been told already
		}
	}
	return true
}

// take moves every queued frame into buf (emptied first) for the writer
// and hands the queue buf's old array, so the two slices are reused.
func (c *client) take(buf []item) []item {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	buf, c.queue = c.queue, buf[:0]
	c.qlen.Store(0)
	return buf
}

// drain releases what is left in the queue once the writer has stopped.
func (c *client) drain() {
	for _, it := range c.take(nil) {
		it.release()
	}
}

// sendState is what a session's reader keeps for its sends: the rate
// limit's bucket and the recent peer-gone notices.
type sendState struct {
	tokens int64
	last   time.Time
	gone   map[pubkey.Node]time.Time
}

// handleSend forwards the packet of a send frame (payload p, which the
// reader reuses after the call); an error ends the session.
func (c *client) handleSend(st *sendState, p []byte) error {
	s := c.s
	dst, pkt, ok := relay.SplitKey(p)
	if !ok {
		s.c.closedProtocol.Add(1)
		return errors.New("short send frame")
	}
	s.c.packetsIn.Add(1)
	s.c.bytesIn.Add(int64(len(pkt)))
	if s.o.Rate > 0 {
		now := s.o.Clock.Now()
		st.tokens = min(s.o.Burst, st.tokens+int64(now.Sub(st.last).Seconds()*float64(s.o.Rate)))
		st.last = now
		if st.tokens < int64(len(pkt)) {
			s.c.dropsRate.Add(1)
			return nil
		}
		st.tokens -= int64(len(pkt))
	}
	to := s.lookup(dst)
	if to == nil {
		s.c.dropsNoPeer.Add(1)
		if st.gone == nil || len(st.gone) > maxGoneTracked {
			st.gone = map[pubkey.Node]time.Time{}
		}
		if now := s.o.Clock.Now(); now.Sub(st.gone[dst]) >= peerGoneEvery {
			st.gone[dst] = now
			c.enqueue(item{typ: relay.FramePeerGone, key: dst, data: []byte{relay.GoneNotHere}})
		}
		return nil
	}
	bp := packetBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], pkt...)
	it := item{typ: relay.FrameRecv, key: c.key, data: *bp, buf: bp}
	if !to.enqueue(it) {
		it.release()
		s.c.dropsQueueFull.Add(1)
	}
	return nil
}

// writeItem adds one frame to the writer's batch and releases its buffer.
func (c *client) writeItem(bw *batchWriter, it item) error {
	n := len(it.data)
	keyed := it.typ == relay.FrameRecv || it.typ == relay.FramePeerGone
	if keyed {
		n += relay.KeyLen
	}
	bw.buf = relay.AppendFrameHeader(bw.buf, it.typ, n)
	if keyed {
		bw.buf = append(bw.buf, it.key.PublicKey[:]...)
	}
	_, err := bw.Write(it.data)
	if it.typ == relay.FrameRecv && err == nil {
		c.s.c.packetsOut.Add(1)
		c.s.c.bytesOut.Add(int64(len(it.data)))
	}
	it.release()
	return err
}

// batchWriter gathers the frames of one queue drain and writes them with
// one call, so the session encrypts and sends them as a few large writes
// (noiseconn batches frames per system call) instead of one per packet.
// Its buffer grows only when a session is busy: idle sessions keep none.
type batchWriter struct {
	w   io.Writer
	buf []byte
}

// batchLimit flushes a drain early so one write stays bounded.
const batchLimit = 64 << 10

func (b *batchWriter) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if len(b.buf) >= batchLimit {
		return len(p), b.Flush()
	}
	return len(p), nil
}

// Flush writes what is gathered.
func (b *batchWriter) Flush() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}
