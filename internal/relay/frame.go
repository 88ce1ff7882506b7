package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frames inside the session are
//
//	type (1 byte) | length (4 bytes, big-endian) | payload (length bytes)
//
// with length at most maxPayload. Types:
//
//	frameInfo      relay→client, first frame: keepalive seconds (uint32),
//	               rate (uint64, bytes/s, 0 unlimited), burst (uint64);
//	               later fields may be appended
//	frameSend      client→relay: destination key (32) | packet
//	frameRecv      relay→client: source key (32) | packet
//	framePeerGone  relay→client: key (32) | reason (1)
//	framePing      either way: 8 bytes, answered by framePong with the same
//	framePong      8 bytes
//	frameKeepAlive relay→client: empty
//	frameClosing   relay→client before it closes: reason (1)
//
// Unknown types are skipped, for later additions.
const (
	frameInfo      byte = 0x01
	frameSend      byte = 0x02
	frameRecv      byte = 0x03
	framePeerGone  byte = 0x04
	framePing      byte = 0x05
	framePong      byte = 0x06
	frameKeepAlive byte = 0x07
	frameClosing   byte = 0x08

	frameHeaderLen = 5
	maxPayload     = KeyLen + MaxPacketSize
)

// Reasons in framePeerGone and frameClosing.
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

// readFrame reads one frame from r into buf (which must hold maxPayload
// bytes) and returns its type and payload, aliasing buf. A length above
// maxPayload fails before the payload is read.
func readFrame(r io.Reader, bufp *[]byte) (byte, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxPayload {
		return 0, nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrFrameTooLarge, n, maxPayload)
	}
	if int(n) > cap(*bufp) {
		// Grow for a large packet: idle sessions keep only the small
		// initial buffer, so a thousand of them cost little memory.
		*bufp = make([]byte, min(max(int(n), 2*cap(*bufp)), maxPayload))
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

// initialReadBuf is the first read buffer of a session: a full-size
// WireGuard packet and its key fit.
const initialReadBuf = 2048

// appendHeader appends a frame header for a payload of n bytes.
func appendHeader(dst []byte, typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(dst, typ), uint32(n))
}

// keyFrame is a payload starting with a node key.
func splitKey(p []byte) (k [KeyLen]byte, rest []byte, ok bool) {
	if len(p) < KeyLen {
		return k, nil, false
	}
	copy(k[:], p)
	return k, p[KeyLen:], true
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
