// Package stun owns Warren's use of STUN (RFC 5389): building and parsing
// Binding requests and responses, a UDP responder that tells each client
// the address and port its request came from (XOR-MAPPED-ADDRESS), and a
// client, Request, that asks a responder from an existing UDP socket so a
// node learns the public address of the very socket WireGuard uses.
//
// Only the Binding method is spoken, without authentication: the mapped
// address is a hint for NAT traversal, not a secret. FINGERPRINT is added
// to responses and checked when present.
package stun

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
)

const (
	// MagicCookie is the fixed value in every RFC 5389 message.
	MagicCookie = 0x2112a442
	// HeaderLen is the size of a STUN message header.
	HeaderLen = 20
	// MaxMessageLen bounds the messages this package parses.
	MaxMessageLen = 1500

	typeBindingRequest  = 0x0001
	typeBindingSuccess  = 0x0101
	attrMappedAddress   = 0x0001
	attrXORMappedAddr   = 0x0020
	attrSoftware        = 0x8022
	attrFingerprint     = 0x8028
	fingerprintXOR      = 0x5354554e
	familyIPv4          = 0x01
	familyIPv6          = 0x02
	software            = "warren"
	fingerprintAttrSize = 8
)

// TxID is a STUN transaction ID.
type TxID [12]byte

// NewTxID returns a random transaction ID.
func NewTxID() TxID {
	var t TxID
	rand.Read(t[:])
	return t
}

var (
	// ErrNotSTUN means the bytes are not a STUN message (so, on a shared
	// socket, probably a WireGuard packet).
	ErrNotSTUN = errors.New("stun: not a STUN message")
	// ErrMalformed means a STUN message whose attributes do not parse or
	// whose FINGERPRINT is wrong.
	ErrMalformed = errors.New("stun: malformed message")
	// ErrNoAddress means a Binding response without a mapped address.
	ErrNoAddress = errors.New("stun: response has no mapped address")
)

// Is reports whether b looks like a STUN message: the two top bits zero,
// the magic cookie, a length that matches and is a multiple of 4. A
// WireGuard message never does (its first byte is 1..4 followed by three
// zero bytes, so the cookie check fails). Use it to demultiplex a socket.
func Is(b []byte) bool {
	return len(b) >= HeaderLen && b[0]&0xc0 == 0 &&
		binary.BigEndian.Uint32(b[4:8]) == MagicCookie &&
		int(binary.BigEndian.Uint16(b[2:4])) == len(b)-HeaderLen && len(b)%4 == 0
}

// Message is a parsed STUN message: its type, transaction ID and, for a
// Binding success response, the mapped address.
type Message struct {
	Type   uint16
	TxID   TxID
	Mapped netip.AddrPort // XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS; zero if neither
	// HasFingerprint says a FINGERPRINT attribute was present (and right).
	HasFingerprint bool
}

// IsBindingRequest reports whether m is a Binding request.
func (m *Message) IsBindingRequest() bool { return m.Type == typeBindingRequest }

// IsBindingSuccess reports whether m is a Binding success response.
func (m *Message) IsBindingSuccess() bool { return m.Type == typeBindingSuccess }

// Parse parses a STUN message. It never reads past b and refuses messages
// longer than MaxMessageLen. Unknown attributes are skipped; attributes
// after FINGERPRINT are an error.
func Parse(b []byte) (Message, error) {
	var m Message
	if !Is(b) {
		return m, ErrNotSTUN
	}
	if len(b) > MaxMessageLen {
		return m, ErrMalformed
	}
	m.Type = binary.BigEndian.Uint16(b[0:2])
	copy(m.TxID[:], b[8:20])
	var mapped, xorMapped netip.AddrPort
	for off := HeaderLen; off < len(b); {
		if len(b)-off < 4 {
			return m, ErrMalformed
		}
		typ := binary.BigEndian.Uint16(b[off:])
		n := int(binary.BigEndian.Uint16(b[off+2:]))
		start := off + 4
		end := start + n
		if end > len(b) {
			return m, ErrMalformed
		}
		val := b[start:end]
		if m.HasFingerprint {
			return m, ErrMalformed // FINGERPRINT must be last
		}
		switch typ {
		case attrXORMappedAddr:
			ap, ok := parseAddr(val, true, m.TxID)
			if !ok {
				return m, ErrMalformed
			}
			xorMapped = ap
		case attrMappedAddress:
			ap, ok := parseAddr(val, false, m.TxID)
			if !ok {
				return m, ErrMalformed
			}
			mapped = ap
		case attrFingerprint:
			if n != 4 || binary.BigEndian.Uint32(val) != fingerprint(b[:off], len(b)) {
				return m, ErrMalformed
			}
			m.HasFingerprint = true
		}
		off = start + (n+3)&^3
	}
	m.Mapped = xorMapped
	if !m.Mapped.IsValid() {
		m.Mapped = mapped
	}
	return m, nil
}

func parseAddr(v []byte, xor bool, tx TxID) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4])
	var key [16]byte
	if xor {
		port ^= MagicCookie >> 16
		binary.BigEndian.PutUint32(key[:4], MagicCookie)
		copy(key[4:], tx[:])
	}
	switch {
	case v[1] == familyIPv4 && len(v) == 8:
		var a [4]byte
		for i := range a {
			a[i] = v[4+i] ^ key[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case v[1] == familyIPv6 && len(v) == 20:
		var a [16]byte
		for i := range a {
			a[i] = v[4+i] ^ key[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a), port), true
	}
	return netip.AddrPort{}, false
}

// fingerprint is the FINGERPRINT value for the message whose bytes before
// the attribute are pre, when the whole message is total bytes long: the
// header's length field counts the FINGERPRINT attribute.
func fingerprint(pre []byte, total int) uint32 {
	var hdr [4]byte
	copy(hdr[:2], pre[:2])
	binary.BigEndian.PutUint16(hdr[2:], uint16(total-HeaderLen))
	c := crc32.ChecksumIEEE(hdr[:])
	c = crc32.Update(c, crc32.IEEETable, pre[4:])
	return c ^ fingerprintXOR
}

// AppendRequest appends a Binding request with transaction ID tx and a
// FINGERPRINT to dst.
func AppendRequest(dst []byte, tx TxID) []byte {
	return appendMessage(dst, typeBindingRequest, tx, nil)
}

// AppendResponse appends a Binding success response telling the client it
// was seen from addr (XOR-MAPPED-ADDRESS), with SOFTWARE and FINGERPRINT.
func AppendResponse(dst []byte, tx TxID, addr netip.AddrPort) []byte {
	a := addr.Addr().Unmap()
	key := make([]byte, 16)
	binary.BigEndian.PutUint32(key[:4], MagicCookie)
	copy(key[4:], tx[:])
	var ip []byte
	fam := byte(familyIPv4)
	if a.Is4() {
		b := a.As4()
		ip = b[:]
	} else {
		b := a.As16()
		ip = b[:]
		fam = familyIPv6
	}
	v := make([]byte, 4, 4+len(ip))
	v[1] = fam
	binary.BigEndian.PutUint16(v[2:], addr.Port()^(MagicCookie>>16))
	for i, c := range ip {
		v = append(v, c^key[i])
	}
	attrs := appendAttr(nil, attrXORMappedAddr, v)
	attrs = appendAttr(attrs, attrSoftware, []byte(software))
	return appendMessage(dst, typeBindingSuccess, tx, attrs)
}

func appendAttr(dst []byte, typ uint16, v []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(v)))
	dst = append(dst, v...)
	for i := len(v); i%4 != 0; i++ {
		dst = append(dst, 0) // padding to a 4-byte boundary
	}
	return dst
}

func appendMessage(dst []byte, typ uint16, tx TxID, attrs []byte) []byte {
	start := len(dst)
	total := HeaderLen + len(attrs) + fingerprintAttrSize
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint16(dst, uint16(total-HeaderLen))
	dst = binary.BigEndian.AppendUint32(dst, MagicCookie)
	dst = append(dst, tx[:]...)
	dst = append(dst, attrs...)
	fp := fingerprint(dst[start:], total)
	dst = binary.BigEndian.AppendUint16(dst, attrFingerprint)
	dst = binary.BigEndian.AppendUint16(dst, 4)
	return binary.BigEndian.AppendUint32(dst, fp)
}
