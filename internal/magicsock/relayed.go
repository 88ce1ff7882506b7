package magicsock

// Packets that arrive through the relay and are handed to the engine.

import (
	"net/netip"

	"github.com/warrenmesh/warren/internal/conn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// ReceiveRelayed hands the layer a packet the relay delivered from src.
// When the engine is behind it waits for it, as long as the layer is open:
// the relay connection's reader then stops reading, its TCP window closes
// and the relay holds (or drops) the packets before they cross to this
// node, rather than this node receiving and decrypting them only to drop
// them. A layer not open drops the packet.
func (c *Conn) ReceiveRelayed(src pubkey.Node, pkt []byte) {
	c.Stats.RelayRecv.Add(1)
	if isDisco(pkt) {
		c.handleDisco(pkt, netip.AddrPort{}, src, c.clock.Now())
		return
	}
	bp := relayBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], pkt...)
	rp := relayPacket{src: src, b: *bp, buf: bp}
	select {
	case c.relayIn <- rp:
		return
	default:
	}
	c.mu.RLock()
	stop, open := c.stop, c.open
	c.mu.RUnlock()
	if open {
		c.Stats.RelayWaits.Add(1)
		select {
		case c.relayIn <- rp:
			return
		case <-stop:
		}
	}
	relayBufs.Put(bp)
	c.Stats.RelayDrops.Add(1)
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
