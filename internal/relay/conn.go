package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/noiseconn"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// DialOptions are the optional parts of Dial.
type DialOptions struct {
	// Proxy picks an HTTP proxy for the relay URL, as http.Transport.Proxy
	// does; http.ProxyFromEnvironment honours HTTP_PROXY, HTTPS_PROXY and
	// NO_PROXY. nil: connect directly.
	Proxy func(*http.Request) (*url.URL, error)
	// Control, if set, is called on the TCP socket before it connects
	// (see noiseconn.DialOptions.Control).
	Control func(network, address string, c syscall.RawConn) error
}

// ServerInfo is what the relay announces when a session starts.
type ServerInfo struct {
	KeepAlive time.Duration // how often the relay sends keepalives
	Rate      int64         // bytes per second this session may send; 0 unlimited
	Burst     int64
}

// MsgType is the kind of a received Message.
type MsgType int

const (
	// MsgPacket is a packet from Peer.
	MsgPacket MsgType = iota + 1
	// MsgPeerGone says Peer is not connected to this relay (Reason).
	MsgPeerGone
	// MsgPong answers a Ping; Data is its 8 bytes.
	MsgPong
	// MsgKeepAlive is the relay's keepalive.
	MsgKeepAlive
	// MsgClosing says the relay is about to close the session (Reason).
	MsgClosing
)

// Message is one frame received from the relay.
type Message struct {
	Type   MsgType
	Peer   pubkey.Node // MsgPacket: source; MsgPeerGone: the absent key
	Data   []byte      // MsgPacket: the packet; valid until the next Recv
	Reason byte        // MsgPeerGone, MsgClosing
}

// Conn is one relay session (no reconnection: see Client for that).
// Send and Ping may be called concurrently with each other and with Recv;
// Recv from one goroutine at a time.
type Conn struct {
	c    *noiseconn.Conn
	rbuf []byte
	info ServerInfo

	wmu  sync.Mutex
	wbuf []byte
}

// Dial opens a relay session at relayURL (http:// or https://; Path is
// appended), checking the relay's key and proving nodeKey. It returns
// once the relay has accepted the session; an unvouched key fails with an
// error wrapping ErrNotVouched. ctx bounds dialling only.
func Dial(ctx context.Context, relayURL string, relayKey pubkey.Relay, nodeKey noise.PrivateKey, o DialOptions) (*Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, noiseconn.DefaultHandshakeTimeout)
		defer cancel()
	}
	cc, err := noiseconn.DialWith(ctx, noiseconn.DialOptions{Protocol: RelayProtocol, Proxy: o.Proxy, Control: o.Control}, relayURL, relayKey.PublicKey, nodeKey)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	// No bufio: the session already holds a decrypted frame, and frames are
	// read from it directly (one copy fewer per relayed byte).
	c := &Conn{c: cc, rbuf: make([]byte, InitialReadBuf)}
	// The first frame is the relay's info, sent once the session is routable.
	dl, _ := ctx.Deadline()
	cc.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { cc.SetReadDeadline(time.Unix(1, 0)) })
	typ, p, err := ReadFrame(c.c, &c.rbuf)
	stop()
	if err == nil && (typ != FrameInfo || len(p) < 20) {
		err = errors.New("relay: first frame is not the relay's info")
	}
	if err != nil {
		cc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("relay: waiting for the relay's info: %w", ctx.Err())
		}
		return nil, fmt.Errorf("relay: waiting for the relay's info: %w", err)
	}
	cc.SetReadDeadline(time.Time{})
	c.info = ServerInfo{KeepAlive: time.Duration(binary.BigEndian.Uint32(p)) * time.Second,
		Rate: int64(binary.BigEndian.Uint64(p[4:])), Burst: int64(binary.BigEndian.Uint64(p[12:]))}
	return c, nil
}

// Info returns what the relay announced.
func (c *Conn) Info() ServerInfo { return c.info }

// RelayKey is the relay's authenticated key.
func (c *Conn) RelayKey() pubkey.Relay { return pubkey.Relay{PublicKey: c.c.Peer()} }

// Send asks the relay to deliver pkt to the node dst. Delivery is best
// effort, like UDP. A packet larger than MaxPacketSize is refused here.
func (c *Conn) Send(dst pubkey.Node, pkt []byte) error {
	if len(pkt) > MaxPacketSize {
		return fmt.Errorf("relay: packet of %d bytes (at most %d)", len(pkt), MaxPacketSize)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendFrameHeader(c.wbuf[:0], FrameSend, KeyLen+len(pkt))
	c.wbuf = append(append(c.wbuf, dst.PublicKey[:]...), pkt...)
	return c.write(c.wbuf)
}

// SendBatch asks the relay to deliver pkts[i] to the node dsts[i], all
// with one write to the session (which sends up to 16 session frames per
// system call), so a busy sender costs the node and the relay far fewer
// system calls than one Send per packet. A packet larger than
// MaxPacketSize fails the batch before anything is written.
func (c *Conn) SendBatch(dsts []noise.PublicKey, pkts [][]byte) error {
	for _, pkt := range pkts {
		if len(pkt) > MaxPacketSize {
			return fmt.Errorf("relay: packet of %d bytes (at most %d)", len(pkt), MaxPacketSize)
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = c.wbuf[:0]
	for i, pkt := range pkts {
		c.wbuf = AppendFrameHeader(c.wbuf, FrameSend, KeyLen+len(pkt))
		c.wbuf = append(append(c.wbuf, dsts[i][:]...), pkt...)
	}
	return c.write(c.wbuf)
}

// Ping sends a ping; the relay answers with a MsgPong carrying data.
func (c *Conn) Ping(data [8]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(AppendFrameHeader(c.wbuf[:0], FramePing, 8), data[:]...)
	return c.write(c.wbuf)
}

// MaxBatchBytes is how many packet bytes a sender should put in one
// SendBatch: a batch's frames then fit the buffer a Conn keeps.
const MaxBatchBytes = 64 << 10

// write writes one whole frame (Conn.Write is atomic per call) within the
// write timeout. Callers hold wmu.
func (c *Conn) write(b []byte) error {
	c.c.SetWriteDeadline(time.Now().Add(DefaultWriteTimeout))
	_, err := c.c.Write(b)
	if cap(c.wbuf) > MaxBatchBytes+FrameHeaderLen+MaxFramePayload {
		c.wbuf = nil // do not keep an oversized buffer after a huge batch
	}
	return err
}

// Recv returns the next message. Data aliases an internal buffer valid
// until the next Recv. After any error, including an expired read
// deadline, the Conn is unusable: close it.
func (c *Conn) Recv() (Message, error) {
	for {
		typ, p, err := ReadFrame(c.c, &c.rbuf)
		if err != nil {
			return Message{}, err
		}
		switch typ {
		case FrameRecv, FramePeerGone:
			k, rest, ok := SplitKey(p)
			if !ok {
				return Message{}, errors.New("relay: short frame from relay")
			}
			if typ == FrameRecv {
				return Message{Type: MsgPacket, Peer: k, Data: rest}, nil
			}
			m := Message{Type: MsgPeerGone, Peer: k}
			if len(rest) > 0 {
				m.Reason = rest[0]
			}
			return m, nil
		case FramePong:
			return Message{Type: MsgPong, Data: p}, nil
		case FrameKeepAlive:
			return Message{Type: MsgKeepAlive}, nil
		case FrameClosing:
			m := Message{Type: MsgClosing}
			if len(p) > 0 {
				m.Reason = p[0]
			}
			return m, nil
		}
	}
}

// SetReadDeadline bounds the next Recv.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// Close closes the session.
func (c *Conn) Close() error { return c.c.Close() }
