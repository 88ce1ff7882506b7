package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/warrenmesh/warren/internal/pubkey"
)

// The frame layer is exported for package relayserver, the other end.
//
// Frames inside the session are
//
//	type (1 byte) | length (4 bytes, big-endian) | payload (length bytes)
//
// with length at most MaxFramePayload. Types:
//
//	FrameInfo      relay→client, first frame: keepalive seconds (uint32),
//	               rate (uint64, bytes/s, 0 unlimited), burst (uint64);
//	               later fields may be appended
//	FrameSend      client→relay: destination key (32) | packet
//	FrameRecv      relay→client: source key (32) | packet
//	FramePeerGone  relay→client: key (32) | reason (1)
//	FramePing      either way: 8 bytes, answered by FramePong with the same
//	FramePong      8 bytes
//	FrameKeepAlive relay→client: empty
//	FrameClosing   relay→client before it closes: reason (1)
//
// Unknown types are skipped, for later additions.
const (
	FrameInfo      byte = 0x01
	FrameSend      byte = 0x02
	FrameRecv      byte = 0x03
	FramePeerGone  byte = 0x04
	FramePing      byte = 0x05
	FramePong      byte = 0x06
	FrameKeepAlive byte = 0x07
	FrameClosing   byte = 0x08

	FrameHeaderLen  = 5
	MaxFramePayload = KeyLen + MaxPacketSize
)

// Reasons in FramePeerGone and FrameClosing.
const (
	// GoneNotHere: the destination has no session on this relay.
	GoneNotHere byte = 0
	// ClosingReplaced: a newer session of the same key took over.
	ClosingReplaced byte = 1
	// ClosingNotVouched: the coordination server stopped vouching.
	ClosingNotVouched byte = 2
	// ClosingShutdown: the relay is shutting down.
	ClosingShutdown byte = 3
)

// ErrFrameTooLarge is returned (wrapped) for a frame longer than a
// relayed packet and its key.
var ErrFrameTooLarge = errors.New("relay: frame too large")

// ReadFrame reads one frame from r into *bufp (grown as needed, up to
// MaxFramePayload bytes) and returns its type and payload, aliasing the
// buffer. A length above MaxFramePayload fails before the payload is read.
func ReadFrame(r io.Reader, bufp *[]byte) (byte, []byte, error) {
	var hdr [FrameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFramePayload {
		return 0, nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrFrameTooLarge, n, MaxFramePayload)
	}
	if int(n) > cap(*bufp) {
		// Grow for a large packet: idle sessions keep only the small
		// initial buffer, so a thousand of them cost little memory.
		*bufp = make([]byte, min(max(int(n), 2*cap(*bufp)), MaxFramePayload))
	}
	buf := (*bufp)[:cap(*bufp)]
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], buf[:n], nil
}

// InitialReadBuf is the first read buffer of a session: a full-size
// WireGuard packet and its key fit.
const InitialReadBuf = 2048

// AppendFrameHeader appends a frame header for a payload of n bytes.
func AppendFrameHeader(dst []byte, typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(dst, typ), uint32(n))
}

// SplitKey splits a payload that starts with a node key.
func SplitKey(p []byte) (k pubkey.Node, rest []byte, ok bool) {
	if len(p) < KeyLen {
		return k, nil, false
	}
	copy(k.PublicKey[:], p)
	return k, p[KeyLen:], true
}
