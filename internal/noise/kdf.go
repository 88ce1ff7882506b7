// Package noise owns WireGuard's cryptographic handshake:
// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with WireGuard's prologue, the
// TAI64N payload, the MAC1/MAC2 fields and cookie replies, the keys
// (Curve25519, with low-order points rejected) and the derivation of the
// transport keys. It uses only golang.org/x/crypto primitives and holds no
// locks: the engine serializes access to each Handshake.
package noise

import (
	"crypto/hmac"
	"hash"

	"golang.org/x/crypto/blake2s"
)

// Protocol names hashed into the initial chaining key and hash.
const (
	Construction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	Identifier   = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	LabelMAC1    = "mac1----"
	LabelCookie  = "cookie--"
)

var (
	initialChainKey [blake2s.Size]byte
	initialHash     [blake2s.Size]byte
)

func init() {
	initialChainKey = blake2s.Sum256([]byte(Construction))
	initialHash = mixHash(initialChainKey, []byte(Identifier))
}

func newBlake2s() hash.Hash {
	h, _ := blake2s.New256(nil)
	return h
}

// mixHash returns HASH(h || data).
func mixHash(h [blake2s.Size]byte, data []byte) [blake2s.Size]byte {
	d, _ := blake2s.New256(nil)
	d.Write(h[:])
	d.Write(data)
	var out [blake2s.Size]byte
	d.Sum(out[:0])
	return out
}

// hmacBlake2s returns HMAC-BLAKE2s(key, parts...).
func hmacBlake2s(key []byte, parts ...[]byte) (out [blake2s.Size]byte) {
	m := hmac.New(newBlake2s, key)
	for _, p := range parts {
		m.Write(p)
	}
	m.Sum(out[:0])
	return out
}

// kdf is HKDF with HMAC-BLAKE2s as in the WireGuard paper: it returns
// t1, t2, t3 where t0 = HMAC(key, input), t1 = HMAC(t0, 0x1),
// t(i) = HMAC(t0, t(i-1) || i). n (1..3) outputs are computed.
func kdf(n int, key, input []byte) (t1, t2, t3 [blake2s.Size]byte) {
	t0 := hmacBlake2s(key, input)
	t1 = hmacBlake2s(t0[:], []byte{1})
	if n > 1 {
		t2 = hmacBlake2s(t0[:], t1[:], []byte{2})
	}
	if n > 2 {
		t3 = hmacBlake2s(t0[:], t2[:], []byte{3})
	}
	Zero(t0[:])
	return
}

// KDF1, KDF2 and KDF3 are exported for test vectors and for callers that
// derive their own keys from a chaining key.
func KDF1(key, input []byte) [32]byte { t1, _, _ := kdf(1, key, input); return t1 }

// KDF2: see KDF1.
func KDF2(key, input []byte) ([32]byte, [32]byte) { t1, t2, _ := kdf(2, key, input); return t1, t2 }

// KDF3: see KDF1.
func KDF3(key, input []byte) ([32]byte, [32]byte, [32]byte) { return kdf(3, key, input) }

// mac returns keyed BLAKE2s-128(key, data).
func mac(key []byte, data []byte) (out [16]byte) {
	m, _ := blake2s.New128(key)
	m.Write(data)
	m.Sum(out[:0])
	return out
}
