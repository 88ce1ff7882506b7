package magicsock

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/crypto/nacl/box"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// Disco messages are the path layer's own datagrams, sent on the same UDP
// socket as WireGuard (and through the relay): path probes and their
// answers, and "call me maybe". On the wire:
//
//	magic "WRNdsc" (6) | sender disco public key (32) | nonce (24) |
//	NaCl box (X25519 + XSalsa20-Poly1305) of the payload
//
// The box is sealed with the sender's disco private key for the receiver's
// disco public key, both distributed by the coordination server in the
// netmap, so a probe cannot be forged or read by anyone else. WireGuard
// messages start with a type byte 1..4 followed by three zero bytes, so
// the magic never collides with them.
//
// Payloads (first byte is the type):
//
//	ping        1 | txid (12) | sender node key (32) | sender clock (8)
//	pong        2 | txid (12) | observed source address (16) | port (2)
//	callMeMaybe 3 | n × (address (16) | port (2)), n ≤ maxCallMeMaybe
//
// The sender clock of a ping is nanoseconds since the sender's path layer
// started (monotonic; a new process has a new disco key), so the receiver
// can refuse a replayed ping: one it has seen (by txid) within the replay
// window, or one older than the window (see pingReplay). Pings without
// the clock (from older versions) are answered with a pong and change
// nothing else.
const (
	discoMagic     = "WRNdsc"
	discoHeaderLen = len(discoMagic) + 32 + 24
	txIDLen        = 12
	pingClockLen   = 8
	addrLen        = 18
	maxCallMeMaybe = 32
	// maxDiscoPayload bounds what we open.
	maxDiscoPayload = 1 + maxCallMeMaybe*addrLen

	msgPing        = 1
	msgPong        = 2
	msgCallMeMaybe = 3
)

type txID [txIDLen]byte

// isDisco reports whether b looks like a disco message.
func isDisco(b []byte) bool {
	return len(b) >= discoHeaderLen+box.Overhead+1 && string(b[:len(discoMagic)]) == discoMagic
}

// discoMsg is a parsed payload.
type discoMsg struct {
	typ      byte
	tx       txID
	nodeKey  pubkey.Node      // ping
	clock    uint64           // ping: the sender's clock (0: none, an older sender)
	observed netip.AddrPort   // pong
	addrs    []netip.AddrPort // callMeMaybe
}

var errDisco = errors.New("magicsock: malformed disco message")

func putAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().As16()
	b = append(b, a[:]...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func getAddr(b []byte) netip.AddrPort {
	var a [16]byte
	copy(a[:], b[:16])
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), binary.BigEndian.Uint16(b[16:18]))
}

// encode appends the payload of m to b.
func (m *discoMsg) encode(b []byte) []byte {
	b = append(b, m.typ)
	switch m.typ {
	case msgPing:
		b = append(b, m.tx[:]...)
		b = append(b, m.nodeKey.PublicKey[:]...)
		if m.clock != 0 {
			b = binary.BigEndian.AppendUint64(b, m.clock)
		}
	case msgPong:
		b = append(b, m.tx[:]...)
		b = putAddr(b, m.observed)
	case msgCallMeMaybe:
		for i, a := range m.addrs {
			if i == maxCallMeMaybe {
				break
			}
			b = putAddr(b, a)
		}
	}
	return b
}

// parseDisco parses a payload; it never panics on any input.
func parseDisco(p []byte) (discoMsg, error) {
	var m discoMsg
	if len(p) < 1 {
		return m, errDisco
	}
	m.typ, p = p[0], p[1:]
	switch m.typ {
	case msgPing:
		if len(p) != txIDLen+32 && len(p) != txIDLen+32+pingClockLen {
			return m, errDisco
		}
		copy(m.tx[:], p)
		copy(m.nodeKey.PublicKey[:], p[txIDLen:])
		if len(p) == txIDLen+32+pingClockLen {
			if m.clock = binary.BigEndian.Uint64(p[txIDLen+32:]); m.clock == 0 {
				return m, errDisco
			}
		}
	case msgPong:
		if len(p) != txIDLen+addrLen {
			return m, errDisco
		}
		copy(m.tx[:], p)
		m.observed = getAddr(p[txIDLen:])
	case msgCallMeMaybe:
		if len(p)%addrLen != 0 || len(p)/addrLen > maxCallMeMaybe {
			return m, errDisco
		}
		for ; len(p) > 0; p = p[addrLen:] {
			if a := getAddr(p); a.IsValid() && a.Port() != 0 {
				m.addrs = append(m.addrs, a)
			}
		}
	default:
		return m, errDisco
	}
	return m, nil
}

// seal builds a whole disco packet from us (pub, with the precomputed
// shared key for the receiver) carrying m.
func seal(pub pubkey.Disco, shared *[32]byte, m *discoMsg) []byte {
	var nonce [24]byte
	rand.Read(nonce[:])
	out := make([]byte, 0, discoHeaderLen+box.Overhead+1+maxCallMeMaybe*addrLen)
	out = append(out, discoMagic...)
	out = append(out, pub.PublicKey[:]...)
	out = append(out, nonce[:]...)
	payload := m.encode(make([]byte, 0, 64))
	return box.SealAfterPrecomputation(out, payload, &nonce, shared)
}

// senderKey returns the sender's disco key of a packet isDisco accepted.
func senderKey(b []byte) pubkey.Disco {
	var k pubkey.Disco
	copy(k.PublicKey[:], b[len(discoMagic):])
	return k
}

// open authenticates and parses a disco packet with the shared key of its
// sender.
func open(b []byte, shared *[32]byte) (discoMsg, error) {
	if !isDisco(b) || len(b) > discoHeaderLen+box.Overhead+maxDiscoPayload {
		return discoMsg{}, errDisco
	}
	var nonce [24]byte
	copy(nonce[:], b[len(discoMagic)+32:])
	p, ok := box.OpenAfterPrecomputation(nil, b[discoHeaderLen:], &nonce, shared)
	if !ok {
		return discoMsg{}, errDisco
	}
	return parseDisco(p)
}

// sharedKey precomputes the box key between our private and their public
// disco key.
func sharedKey(priv noise.PrivateKey, pub pubkey.Disco) *[32]byte {
	var k [32]byte
	box.Precompute(&k, (*[32]byte)(&pub.PublicKey), (*[32]byte)(&priv))
	return &k
}
