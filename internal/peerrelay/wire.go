// Package peerrelay owns peer relays: a node with a reachable UDP port
// forwarding WireGuard datagrams between two other nodes that cannot reach
// each other directly (docs/RELAY.md, "Peer relays"). It holds the wire
// format shared by both ends and the server side (Server); the client side
// lives in the path layer (package magicsock).
//
// The relay forwards only within sessions: a session joins two nodes, both
// allowed by the coordination server to use this relay (SetClients), and
// each side is bound to the UDP address its authenticated allocation came
// from. Datagrams stay WireGuard messages, sealed end to end between the
// two nodes; the relay reads only the session header in front of them.
package peerrelay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"

	"golang.org/x/crypto/nacl/box"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// On the wire, control messages (between a node and the relay) are
//
//	magic "WRNrly" (6) | sender disco public key (32) | nonce (24) |
//	NaCl box (X25519 + XSalsa20-Poly1305) of the payload
//
// sealed with the sender's disco key for the receiver's, as disco
// messages are (package magicsock). Payloads:
//
//	allocate  1 | txid (12) | sender node key (32) | peer node key (32) | clock (8)
//	allocated 2 | txid (12) | status (1) | session (8) | peer bound (1)
//
// clock is the sender's, nanoseconds and increasing: the relay refuses an
// allocation whose clock is not newer than the last one it took from that
// node (a replay). status is StatusOK or StatusRefused (the peer is not
// allowed to use this relay, or the relay is full).
//
// Data messages carry one WireGuard datagram each:
//
//	0xfe 'W' 'p' 'r' | session (8) | WireGuard message
//
// 0xfe is no WireGuard message type (1..4), no STUN first byte (0..3) and
// no disco or control magic ('W').
const (
	ctlMagic     = "WRNrly"
	ctlHeaderLen = len(ctlMagic) + 32 + 24
	txIDLen      = 12
	// DataHeaderLen is the length of the header in front of relayed data.
	DataHeaderLen = 4 + 8

	msgAllocate  = 1
	msgAllocated = 2

	allocateLen  = 1 + txIDLen + 32 + 32 + 8
	allocatedLen = 1 + txIDLen + 1 + 8 + 1
	maxCtlLen    = ctlHeaderLen + box.Overhead + allocateLen
)

// Statuses of an allocated message.
const (
	StatusOK      = 0
	StatusRefused = 1
)

var dataMagic = [4]byte{0xfe, 'W', 'p', 'r'}

// TxID identifies an allocation request.
type TxID [txIDLen]byte

// NewTxID returns a random transaction ID.
func NewTxID() TxID {
	var t TxID
	rand.Read(t[:])
	return t
}

// IsData reports whether b is a relayed data message.
func IsData(b []byte) bool {
	return len(b) > DataHeaderLen && [4]byte(b[:4]) == dataMagic
}

// DataSession is the session of a message IsData accepted.
func DataSession(b []byte) uint64 { return binary.BigEndian.Uint64(b[4:12]) }

// AppendData appends the data message carrying pkt in session s to b.
func AppendData(b []byte, s uint64, pkt []byte) []byte {
	b = append(b, dataMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, s)
	return append(b, pkt...)
}

// IsControl reports whether b looks like a control message.
func IsControl(b []byte) bool {
	return len(b) >= ctlHeaderLen+box.Overhead+1 && string(b[:len(ctlMagic)]) == ctlMagic
}

// ControlSender is the sender's disco key of a message IsControl accepted.
func ControlSender(b []byte) pubkey.Disco {
	var k pubkey.Disco
	copy(k.PublicKey[:], b[len(ctlMagic):])
	return k
}

// Allocate asks the relay for a session with Peer.
type Allocate struct {
	Tx    TxID
	From  pubkey.Node // the sender
	Peer  pubkey.Node
	Clock uint64
}

// Allocated answers an Allocate.
type Allocated struct {
	Tx        TxID
	Status    byte
	Session   uint64
	PeerBound bool // the peer's side is bound: data will get through
}

// Message is a parsed control payload: exactly one of the two is set.
type Message struct {
	Allocate  *Allocate
	Allocated *Allocated
}

var errMalformed = errors.New("peerrelay: malformed control message")

func (a *Allocate) encode() []byte {
	b := make([]byte, 0, allocateLen)
	b = append(b, msgAllocate)
	b = append(b, a.Tx[:]...)
	b = append(b, a.From.PublicKey[:]...)
	b = append(b, a.Peer.PublicKey[:]...)
	return binary.BigEndian.AppendUint64(b, a.Clock)
}

func (a *Allocated) encode() []byte {
	b := make([]byte, 0, allocatedLen)
	b = append(b, msgAllocated)
	b = append(b, a.Tx[:]...)
	b = append(b, a.Status)
	b = binary.BigEndian.AppendUint64(b, a.Session)
	bound := byte(0)
	if a.PeerBound {
		bound = 1
	}
	return append(b, bound)
}

// parse parses a payload; it never panics on any input.
func parse(p []byte) (Message, error) {
	if len(p) < 1 {
		return Message{}, errMalformed
	}
	switch p[0] {
	case msgAllocate:
		if len(p) != allocateLen {
			return Message{}, errMalformed
		}
		a := &Allocate{}
		copy(a.Tx[:], p[1:])
		copy(a.From.PublicKey[:], p[1+txIDLen:])
		copy(a.Peer.PublicKey[:], p[1+txIDLen+32:])
		a.Clock = binary.BigEndian.Uint64(p[1+txIDLen+64:])
		return Message{Allocate: a}, nil
	case msgAllocated:
		if len(p) != allocatedLen || p[1+txIDLen] > StatusRefused || p[allocatedLen-1] > 1 {
			return Message{}, errMalformed
		}
		a := &Allocated{Status: p[1+txIDLen], PeerBound: p[allocatedLen-1] == 1}
		copy(a.Tx[:], p[1:])
		a.Session = binary.BigEndian.Uint64(p[1+txIDLen+1:])
		return Message{Allocated: a}, nil
	}
	return Message{}, errMalformed
}

// SharedKey precomputes the box key between our private and their public
// disco key.
func SharedKey(priv noise.PrivateKey, pub pubkey.Disco) *[32]byte {
	var k [32]byte
	box.Precompute(&k, (*[32]byte)(&pub.PublicKey), (*[32]byte)(&priv))
	return &k
}

// Seal builds a control message from us (pub, the shared key with the
// receiver) carrying exactly one of m's fields.
func Seal(pub pubkey.Disco, shared *[32]byte, m Message) []byte {
	var payload []byte
	if m.Allocate != nil {
		payload = m.Allocate.encode()
	} else {
		payload = m.Allocated.encode()
	}
	var nonce [24]byte
	rand.Read(nonce[:])
	out := make([]byte, 0, ctlHeaderLen+box.Overhead+len(payload))
	out = append(out, ctlMagic...)
	out = append(out, pub.PublicKey[:]...)
	out = append(out, nonce[:]...)
	return box.SealAfterPrecomputation(out, payload, &nonce, shared)
}

// Open authenticates a control message with the shared key of its sender
// and parses it.
func Open(b []byte, shared *[32]byte) (Message, error) {
	if !IsControl(b) || len(b) > maxCtlLen {
		return Message{}, errMalformed
	}
	var nonce [24]byte
	copy(nonce[:], b[len(ctlMagic)+32:])
	p, ok := box.OpenAfterPrecomputation(nil, b[ctlHeaderLen:], &nonce, shared)
	if !ok {
		return Message{}, errMalformed
	}
	return parse(p)
}
