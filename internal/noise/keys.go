package noise

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// KeySize is the size of every WireGuard key.
const KeySize = 32

type (
	// PrivateKey is a Curve25519 private key, kept clamped.
	PrivateKey [KeySize]byte
	// PublicKey is a Curve25519 public key.
	PublicKey [KeySize]byte
	// PresharedKey is the optional symmetric key mixed into the handshake.
	PresharedKey [KeySize]byte
)

// ErrLowOrder is returned when a Diffie-Hellman result is all zeros, i.e.
// the peer's key is a low-order point.
var ErrLowOrder = errors.New("noise: low-order public key")

// GeneratePrivateKey returns a new random, clamped private key.
func GeneratePrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, err
	}
	k.clamp()
	return k, nil
}

func (k *PrivateKey) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// NewPrivateKey returns b as a clamped private key.
func NewPrivateKey(b [KeySize]byte) PrivateKey {
	k := PrivateKey(b)
	k.clamp()
	return k
}

// IsZero reports whether the key is unset.
func (k PrivateKey) IsZero() bool { return isZero(k[:]) }

// IsZero reports whether the key is unset.
func (k PublicKey) IsZero() bool { return isZero(k[:]) }

// IsZero reports whether the key is unset.
func (k PresharedKey) IsZero() bool { return isZero(k[:]) }

// Equal compares in constant time.
func (k PublicKey) Equal(o PublicKey) bool { return subtle.ConstantTimeCompare(k[:], o[:]) == 1 }

// PublicKey derives the public key.
func (k PrivateKey) PublicKey() PublicKey {
	var pub PublicKey
	b, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		panic(err) // cannot fail with the base point
	}
	copy(pub[:], b)
	return pub
}

// SharedSecret computes X25519(k, pub). It fails with ErrLowOrder when the
// result is all zeros (pub is a low-order point).
func (k PrivateKey) SharedSecret(pub PublicKey) (ss [KeySize]byte, err error) {
	b, err := curve25519.X25519(k[:], pub[:])
	if err != nil {
		return ss, ErrLowOrder
	}
	copy(ss[:], b)
	return ss, nil
}

// IsLowOrder reports whether pub is a point whose shared secret with any
// private key is zero.
func (pub PublicKey) IsLowOrder() bool {
	var probe PrivateKey
	probe[0] = 8 // any clamped scalar; low order points give zero for all.
	probe[31] = 64
	_, err := probe.SharedSecret(pub)
	return err != nil
}

func isZero(b []byte) bool {
	var acc byte
	for _, x := range b {
		acc |= x
	}
	return acc == 0
}

func (k PublicKey) String() string    { return base64.StdEncoding.EncodeToString(k[:]) }
func (k PrivateKey) String() string   { return "(private key)" }
func (k PresharedKey) String() string { return "(preshared key)" }

// Base64 returns the private key in wg's base64 form (for key files only).
func (k PrivateKey) Base64() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex encodings are what the configuration protocol uses.
func (k PrivateKey) Hex() string   { return hex.EncodeToString(k[:]) }
func (k PublicKey) Hex() string    { return hex.EncodeToString(k[:]) }
func (k PresharedKey) Hex() string { return hex.EncodeToString(k[:]) }

func parseHex(dst []byte, s string) error {
	if len(s) != 2*KeySize {
		return fmt.Errorf("key must be %d hex characters, got %d", 2*KeySize, len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("key is not hex: %w", err)
	}
	return nil
}

func parseBase64(dst []byte, s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("key is not base64: %w", err)
	}
	if len(b) != KeySize {
		return fmt.Errorf("key must be %d bytes, got %d", KeySize, len(b))
	}
	copy(dst, b)
	return nil
}

// ParsePrivateKeyHex parses the configuration protocol's hex form.
func ParsePrivateKeyHex(s string) (k PrivateKey, err error) {
	err = parseHex(k[:], s)
	return k, err
}

// ParsePublicKeyHex parses the configuration protocol's hex form.
func ParsePublicKeyHex(s string) (k PublicKey, err error) { err = parseHex(k[:], s); return }

// ParsePresharedKeyHex parses the configuration protocol's hex form.
func ParsePresharedKeyHex(s string) (k PresharedKey, err error) { err = parseHex(k[:], s); return }

// ParsePrivateKey parses wg's base64 form.
func ParsePrivateKey(s string) (k PrivateKey, err error) {
	err = parseBase64(k[:], s)
	return k, err
}

// ParsePublicKey parses wg's base64 form.
func ParsePublicKey(s string) (k PublicKey, err error) { err = parseBase64(k[:], s); return }

// Zero overwrites b; used to wipe key material after use.
func Zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// MarshalText encodes a public key in base64 (so it reads as a string in
// JSON).
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses the base64 form.
func (k *PublicKey) UnmarshalText(b []byte) error { return parseBase64(k[:], string(b)) }
