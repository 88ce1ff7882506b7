// Package wire owns the byte layout of the four WireGuard messages
// (handshake initiation, handshake response, cookie reply, transport data):
// their sizes, type codes and field offsets, and allocation-free
// Unmarshal/Marshal that check exact lengths and never panic on hostile
// input. It knows nothing of cryptography; package noise fills the fields.
//
// Layouts (all integers little-endian; "reserved" is three zero bytes):
//
//	initiation (148): type=1 | reserved | sender u32 | ephemeral[32] |
//	                  static[32+16] | timestamp[12+16] | mac1[16] | mac2[16]
//	response    (92): type=2 | reserved | sender u32 | receiver u32 |
//	                  ephemeral[32] | empty[0+16] | mac1[16] | mac2[16]
//	cookie      (64): type=3 | reserved | receiver u32 | nonce[24] | cookie[16+16]
//	transport (>=32): type=4 | reserved | receiver u32 | counter u64 | data[n+16]
package wire

import (
	"encoding/binary"
	"errors"
)

// Message types, the first byte of every message.
const (
	TypeInitiation  = 1
	TypeResponse    = 2
	TypeCookieReply = 3
	TypeTransport   = 4
)

// Sizes of messages and fields.
const (
	InitiationSize      = 148
	ResponseSize        = 92
	CookieReplySize     = 64
	TransportHeaderSize = 16
	TagSize             = 16                            // Poly1305 tag
	MinTransportSize    = TransportHeaderSize + TagSize // a keepalive
	MacSize             = 16
	CookieNonceSize     = 24
	TimestampSize       = 12
	KeySize             = 32

	// MaxTransportSize bounds a datagram we accept or send: the largest
	// UDP payload.
	MaxTransportSize = 65535 - 8
	// PaddingMultiple: plaintexts are padded to a multiple of this.
	PaddingMultiple = 16

	// Offsets of mac1 and mac2 in the handshake messages; MACs cover the
	// message bytes before them.
	InitiationMac1Offset = InitiationSize - 2*MacSize
	InitiationMac2Offset = InitiationSize - MacSize
	ResponseMac1Offset   = ResponseSize - 2*MacSize
	ResponseMac2Offset   = ResponseSize - MacSize

	// Offsets inside a transport message.
	TransportReceiverOffset = 4
	TransportCounterOffset  = 8
	TransportDataOffset     = 16
)

// Errors of Unmarshal. They are sentinels so that callers can count drops by
// reason without allocating.
var (
	ErrShort       = errors.New("wire: message too short")
	ErrSize        = errors.New("wire: wrong message size")
	ErrType        = errors.New("wire: wrong message type")
	ErrReserved    = errors.New("wire: reserved bytes not zero")
	ErrUnknownType = errors.New("wire: unknown message type")
)

// Initiation is the first handshake message.
type Initiation struct {
	Sender    uint32
	Ephemeral [KeySize]byte
	Static    [KeySize + TagSize]byte
	Timestamp [TimestampSize + TagSize]byte
	Mac1      [MacSize]byte
	Mac2      [MacSize]byte
}

// Response is the second handshake message.
type Response struct {
	Sender    uint32
	Receiver  uint32
	Ephemeral [KeySize]byte
	Empty     [TagSize]byte
	Mac1      [MacSize]byte
	Mac2      [MacSize]byte
}

// CookieReply carries an encrypted cookie to a peer under load.
type CookieReply struct {
	Receiver uint32
	Nonce    [CookieNonceSize]byte
	Cookie   [MacSize + TagSize]byte
}

// TransportHeader is the clear part of a transport message.
type TransportHeader struct {
	Receiver uint32
	Counter  uint64
}

// Type returns the message type of b after checking that its length is
// plausible for that type; it returns 0 and an error otherwise. It is the
// first thing done to every received datagram.
func Type(b []byte) (byte, error) {
	if len(b) < 4 {
		return 0, ErrShort
	}
	t := b[0]
	switch t {
	case TypeInitiation:
		if len(b) != InitiationSize {
			return 0, ErrSize
		}
	case TypeResponse:
		if len(b) != ResponseSize {
			return 0, ErrSize
		}
	case TypeCookieReply:
		if len(b) != CookieReplySize {
			return 0, ErrSize
		}
	case TypeTransport:
		if len(b) < MinTransportSize || len(b) > MaxTransportSize {
			return 0, ErrSize
		}
	default:
		return 0, ErrUnknownType
	}
	if b[1]|b[2]|b[3] != 0 {
		return 0, ErrReserved
	}
	return t, nil
}

func checkHeader(b []byte, typ byte, size int) error {
	if len(b) != size {
		if len(b) < size {
			return ErrShort
		}
		return ErrSize
	}
	if b[0] != typ {
		return ErrType
	}
	if b[1]|b[2]|b[3] != 0 {
		return ErrReserved
	}
	return nil
}

func putHeader(b []byte, typ byte) {
	b[0], b[1], b[2], b[3] = typ, 0, 0, 0
}

// Unmarshal parses an initiation of exactly InitiationSize bytes.
func (m *Initiation) Unmarshal(b []byte) error {
	if err := checkHeader(b, TypeInitiation, InitiationSize); err != nil {
		return err
	}
	m.Sender = binary.LittleEndian.Uint32(b[4:])
	copy(m.Ephemeral[:], b[8:40])
	copy(m.Static[:], b[40:88])
	copy(m.Timestamp[:], b[88:116])
	copy(m.Mac1[:], b[116:132])
	copy(m.Mac2[:], b[132:148])
	return nil
}

// Marshal writes the message into b, which must hold InitiationSize bytes,
// and returns b[:InitiationSize].
func (m *Initiation) Marshal(b []byte) []byte {
	b = b[:InitiationSize]
	putHeader(b, TypeInitiation)
	binary.LittleEndian.PutUint32(b[4:], m.Sender)
	copy(b[8:40], m.Ephemeral[:])
	copy(b[40:88], m.Static[:])
	copy(b[88:116], m.Timestamp[:])
	copy(b[116:132], m.Mac1[:])
	copy(b[132:148], m.Mac2[:])
	return b
}

// Unmarshal parses a response of exactly ResponseSize bytes.
func (m *Response) Unmarshal(b []byte) error {
	if err := checkHeader(b, TypeResponse, ResponseSize); err != nil {
		return err
	}
	m.Sender = binary.LittleEndian.Uint32(b[4:])
	m.Receiver = binary.LittleEndian.Uint32(b[8:])
	copy(m.Ephemeral[:], b[12:44])
	copy(m.Empty[:], b[44:60])
	copy(m.Mac1[:], b[60:76])
	copy(m.Mac2[:], b[76:92])
	return nil
}

// Marshal writes the message into b (ResponseSize bytes) and returns it.
func (m *Response) Marshal(b []byte) []byte {
	b = b[:ResponseSize]
	putHeader(b, TypeResponse)
	binary.LittleEndian.PutUint32(b[4:], m.Sender)
	binary.LittleEndian.PutUint32(b[8:], m.Receiver)
	copy(b[12:44], m.Ephemeral[:])
	copy(b[44:60], m.Empty[:])
	copy(b[60:76], m.Mac1[:])
	copy(b[76:92], m.Mac2[:])
	return b
}

// Unmarshal parses a cookie reply of exactly CookieReplySize bytes.
func (m *CookieReply) Unmarshal(b []byte) error {
	if err := checkHeader(b, TypeCookieReply, CookieReplySize); err != nil {
		return err
	}
	m.Receiver = binary.LittleEndian.Uint32(b[4:])
	copy(m.Nonce[:], b[8:32])
	copy(m.Cookie[:], b[32:64])
	return nil
}

// Marshal writes the message into b (CookieReplySize bytes) and returns it.
func (m *CookieReply) Marshal(b []byte) []byte {
	b = b[:CookieReplySize]
	putHeader(b, TypeCookieReply)
	binary.LittleEndian.PutUint32(b[4:], m.Receiver)
	copy(b[8:32], m.Nonce[:])
	copy(b[32:64], m.Cookie[:])
	return b
}

// ParseTransport parses the header of a transport message and returns the
// sealed payload (ciphertext and tag) aliasing b.
func ParseTransport(b []byte) (h TransportHeader, sealed []byte, err error) {
	if len(b) < MinTransportSize {
		return h, nil, ErrShort
	}
	if len(b) > MaxTransportSize {
		return h, nil, ErrSize
	}
	if b[0] != TypeTransport {
		return h, nil, ErrType
	}
	if b[1]|b[2]|b[3] != 0 {
		return h, nil, ErrReserved
	}
	h.Receiver = binary.LittleEndian.Uint32(b[TransportReceiverOffset:])
	h.Counter = binary.LittleEndian.Uint64(b[TransportCounterOffset:])
	return h, b[TransportDataOffset:], nil
}

// PutTransportHeader writes a transport header into b[:16].
func PutTransportHeader(b []byte, h TransportHeader) {
	_ = b[TransportHeaderSize-1]
	putHeader(b, TypeTransport)
	binary.LittleEndian.PutUint32(b[TransportReceiverOffset:], h.Receiver)
	binary.LittleEndian.PutUint64(b[TransportCounterOffset:], h.Counter)
}

// PaddedLen is the length a plaintext of n bytes is padded to, without
// exceeding mtu (when mtu > 0). A zero-length plaintext (keepalive) stays 0.
func PaddedLen(n, mtu int) int {
	p := (n + PaddingMultiple - 1) &^ (PaddingMultiple - 1)
	if mtu > 0 && p > mtu {
		if n > mtu {
			return n
		}
		return mtu
	}
	return p
}
