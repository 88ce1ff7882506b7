package magicsock

// Packets that arrive through the relay and are handed to the engine.

import (
	"net/netip"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// ReceiveRelayed hands the layer a packet the relay delivered from src. It
// does not block: when the engine is behind, the packet is dropped.
func (c *Conn) ReceiveRelayed(src pubkey.Node, pkt []byte) {
	c.Stats.RelayRecv.Add(1)
	if isDisco(pkt) {
		c.handleDisco(pkt, netip.AddrPort{}, src, c.clock.Now())
		return
	}
	bp := relayBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], pkt...)
	select {
	case c.relayIn <- relayPacket{src: src, b: *bp, buf: bp}:
	default:
		relayBufs.Put(bp)
		c.Stats.RelayDrops.Add(1)
	}
}

func (c *Conn) receiveRelay(stop chan struct{}) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		select {
		case <-stop:
			return 0, conn.ErrClosed
		case rp := <-c.relayIn:
			n := 0
			for {
				c.mu.RLock()
				p := c.peers[rp.src]
				c.mu.RUnlock()
				if p != nil && len(rp.b) <= len(bufs[n]) {
					sizes[n] = copy(bufs[n], rp.b)
					eps[n] = p
					n++
				}
				relayBufs.Put(rp.buf)
				if n == len(bufs) {
					return n, nil
				}
				select {
				case rp = <-c.relayIn:
					continue
				default:
				}
				if n > 0 {
					return n, nil
				}
				select {
				case <-stop:
					return 0, conn.ErrClosed
				case rp = <-c.relayIn:
				}
			}
		}
	}
}
