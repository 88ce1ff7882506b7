package noiseconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	flynn "github.com/flynn/noise"

	"github.com/warrenmesh/warren/internal/noise"
)

// frameReader reads length-prefixed frames. It reads ahead: each read
// takes as much as the buffer holds, so a busy session gets many frames
// per system call instead of two calls (header, body) per frame. The
// buffer starts at one frame, allocated on first use, and grows to
// readAheadMax only when a read fills it (the peer sends faster than we
// read): idle sessions keep a small one. It can be resumed after a
// timeout in the middle of a frame, so read deadlines are safe to use for
// polling.
type frameReader struct {
	buf  []byte
	r, w int // unread bytes: buf[r:w]
}

const (
	maxFrame = frameHeaderLen + MaxCiphertext
	// readAheadMax bounds the read-ahead buffer of a busy session.
	readAheadMax = 16 * maxFrame
)

// next returns the body of the next frame, aliasing the reader's buffer and
// valid until the following call. A frame is never longer than
// MaxCiphertext: a larger claimed length fails before anything else is read.
// At a clean end of stream between frames it returns io.EOF.
func (f *frameReader) next(r io.Reader) ([]byte, error) {
	if err := f.fill(r, frameHeaderLen); err != nil {
		if err == io.EOF && f.w > f.r {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	size := int(binary.BigEndian.Uint16(f.buf[f.r:]))
	if size < tagSize || size > MaxCiphertext {
		return nil, fmt.Errorf("%w: %d bytes (want %d..%d)", ErrFrameSize, size, tagSize, MaxCiphertext)
	}
	end := frameHeaderLen + size
	if err := f.fill(r, end); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	body := f.buf[f.r+frameHeaderLen : f.r+end]
	f.r += end
	return body, nil
}

// fill makes at least n (at most maxFrame) unread bytes available.
func (f *frameReader) fill(r io.Reader, n int) error {
	if f.buf == nil {
		f.buf = make([]byte, maxFrame)
	}
	for f.w-f.r < n {
		if f.r+n > len(f.buf) || f.w == len(f.buf) {
			// Move the unread bytes to the front; the caller is done
			// with the frames before them.
			f.w = copy(f.buf, f.buf[f.r:f.w])
			f.r = 0
		}
		m, err := r.Read(f.buf[f.w:])
		f.w += m
		if f.w == len(f.buf) && len(f.buf) < readAheadMax {
			// The peer keeps us busy: read more per call from now on.
			nb := make([]byte, readAheadMax)
			f.w = copy(nb, f.buf[f.r:f.w])
			f.buf, f.r = nb, 0
		}
		if f.w-f.r >= n {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Conn is an established control connection. It implements net.Conn; Read
// and Write may be used concurrently with each other. Its memory is
// bounded: one frame buffer per direction, and while busy a read-ahead
// buffer and a write batch of 16 frames each.
type Conn struct {
	nc      net.Conn
	r       io.Reader // nc, or nc behind bytes the HTTP reader had buffered
	peer    noise.PublicKey
	version uint16

	rmu    sync.Mutex
	rx     frameCipher
	rn     uint64
	rerr   error
	frames frameReader
	rplain []byte // unread plaintext, aliasing frames.buf

	wmu  sync.Mutex
	tx   frameCipher
	wn   uint64
	werr error
	wbuf [frameHeaderLen + MaxCiphertext]byte

	closeOnce sync.Once
	closeErr  error
}

func newConn(nc net.Conn, r io.Reader, peer noise.PublicKey, tx, rx *flynn.CipherState) *Conn {
	if r == nil {
		r = nc
	}
	return &Conn{nc: nc, r: r, peer: peer, version: ProtocolVersion, tx: newFrameCipher(tx), rx: newFrameCipher(rx)}
}

// Peer returns the remote static public key authenticated by the handshake:
// on the server, the node's key; on the client, the server's key.
func (c *Conn) Peer() noise.PublicKey { return c.peer }

// Version returns the negotiated protocol version.
func (c *Conn) Version() uint16 { return c.version }

// Read reads decrypted data. After an authentication failure, a bad frame
// or any non-timeout error the connection is closed and every later Read
// fails with the same error.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if len(c.rplain) > 0 {
			n := copy(p, c.rplain)
			c.rplain = c.rplain[n:]
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		ct, err := c.frames.next(c.r)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, err // resumable: frame state is kept
			}
			return 0, c.failRead(err)
		}
		if c.rn == lastNonce {
			return 0, c.failRead(ErrNonceExhausted)
		}
		pt, err := c.rx.open(ct[:0], c.rn, ct)
		if err != nil {
			return 0, c.failRead(fmt.Errorf("%w (frame %d)", ErrDecrypt, c.rn))
		}
		c.rn++
		c.rplain = pt // an empty frame is legal and simply skipped
	}
}

// failRead records a sticky read error and, unless it is a clean EOF,
// closes the connection so the peer notices too.
func (c *Conn) failRead(err error) error {
	c.rerr = err
	c.rplain = nil
	if err != io.EOF {
		c.Close()
	}
	return err
}

// Write encrypts p into one or more frames of at most MaxPlaintext bytes.
// Any error is sticky: a partly written frame cannot be recovered.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if len(p) > MaxPlaintext {
		return c.writeBatched(p)
	}
	written := 0
	for len(p) > 0 {
		if c.wn == lastNonce {
			c.werr = ErrNonceExhausted
			c.Close()
			return written, c.werr
		}
		n := min(len(p), MaxPlaintext)
		body := c.wbuf[frameHeaderLen : frameHeaderLen+n]
		copy(body, p[:n])
		ct := c.tx.seal(body[:0], c.wn, body)
		c.wn++
		binary.BigEndian.PutUint16(c.wbuf[:frameHeaderLen], uint16(len(ct)))
		if _, err := c.nc.Write(c.wbuf[:frameHeaderLen+len(ct)]); err != nil {
			c.werr = err
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// batchFrames is how many frames one system call carries at most.
const batchFrames = 16

// batchBufs are the buffers of writeBatched, shared by all sessions: a
// session holds one only while it writes a large message (a server with
// 10k streams that each once got a full map would otherwise keep 10k of
// them, ~65 KiB each).
var batchBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, batchFrames*(frameHeaderLen+MaxCiphertext))
	return &b
}}

// writeBatched encrypts a large p into frames and writes up to batchFrames
// of them per system call (the frames on the wire are the same as Write
// makes one by one); c.wmu held.
func (c *Conn) writeBatched(p []byte) (int, error) {
	bp := batchBufs.Get().(*[]byte)
	defer batchBufs.Put(bp)
	written := 0
	for len(p) > 0 {
		buf := (*bp)[:0]
		sent := 0
		for k := 0; k < batchFrames && len(p) > sent; k++ {
			if c.wn == lastNonce {
				c.werr = ErrNonceExhausted
				c.Close()
				return written, c.werr
			}
			n := min(len(p)-sent, MaxPlaintext)
			at := len(buf)
			buf = append(buf, 0, 0)
			buf = c.tx.seal(buf, c.wn, p[sent:sent+n])
			c.wn++
			binary.BigEndian.PutUint16(buf[at:], uint16(len(buf)-at-frameHeaderLen))
			sent += n
		}
		if _, err := c.nc.Write(buf); err != nil {
			c.werr = err
			return written, err
		}
		written += sent
		p = p[sent:]
	}
	return written, nil
}

// Close closes the underlying connection. It is safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.nc.Close() })
	return c.closeErr
}

// LocalAddr returns the underlying connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the underlying connection's remote address (behind a
// reverse proxy, the proxy's).
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetDeadline sets the underlying connection's deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// SetReadDeadline sets the underlying connection's read deadline. A Read
// that times out mid-frame can be retried.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the underlying connection's write deadline. A Write
// that times out fails the connection for writing.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

var _ net.Conn = (*Conn)(nil)
