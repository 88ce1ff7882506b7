package noiseconn

import (
	"crypto/cipher"
	"encoding/binary"

	flynn "github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

// frameCipher seals and opens the transport frames of one direction with
// the key the handshake derived: ChaCha20-Poly1305 with Noise's nonce (32
// zero bits, then the 64-bit counter little-endian), as flynn/noise's own
// cipher does. It keeps the nonce in the struct, so a frame allocates
// nothing: flynn/noise's Cipher builds a fresh one on the heap per call,
// one allocation per 4 KiB of every relayed or control stream.
type frameCipher struct {
	aead  cipher.AEAD
	nonce [chacha20poly1305.NonceSize]byte
}

// newFrameCipher takes over cs, a transport CipherState just returned by
// the handshake (never rekeyed: this protocol has no rekey, a session
// ends when its nonces do).
func newFrameCipher(cs *flynn.CipherState) frameCipher {
	k := cs.UnsafeKey()
	a, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic("noiseconn: " + err.Error()) // only for a key not 32 bytes long
	}
	return frameCipher{aead: a}
}

// seal appends the frame for plaintext pt under nonce n to out.
func (f *frameCipher) seal(out []byte, n uint64, pt []byte) []byte {
	binary.LittleEndian.PutUint64(f.nonce[4:], n)
	return f.aead.Seal(out, f.nonce[:], pt, nil)
}

// open authenticates and decrypts frame ct under nonce n, appending the
// plaintext to out.
func (f *frameCipher) open(out []byte, n uint64, ct []byte) ([]byte, error) {
	binary.LittleEndian.PutUint64(f.nonce[4:], n)
	return f.aead.Open(out, f.nonce[:], ct, nil)
}
