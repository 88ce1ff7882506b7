package proto

import (
	"crypto/subtle"
	"errors"

	"golang.org/x/crypto/blake2s"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// ProofSize is the length of a key rotation proof.
const ProofSize = blake2s.Size

const rotationLabel = "warren rotate node key v1"

// rotationMAC is BLAKE2s keyed with the X25519 secret shared by the new node
// key and the server key, over a label and both node keys.
func rotationMAC(secret [noise.KeySize]byte, oldKey, newKey noise.PublicKey) []byte {
	h, err := blake2s.New256(secret[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	h.Write([]byte(rotationLabel))
	h.Write(oldKey[:])
	h.Write(newKey[:])
	return h.Sum(nil)
}

// RotationProof proves to the server holding serverKey that the caller
// holds newPriv, binding the proof to the key it replaces.
func RotationProof(newPriv noise.PrivateKey, serverKey pubkey.Server, oldKey pubkey.Node) ([]byte, error) {
	ss, err := newPriv.SharedSecret(serverKey.PublicKey)
	if err != nil {
		return nil, err
	}
	defer clear(ss[:])
	return rotationMAC(ss, oldKey.PublicKey, newPriv.PublicKey()), nil
}

// ErrBadProof is returned by VerifyRotationProof for a proof that does not
// check out.
var ErrBadProof = errors.New("proto: key rotation proof does not verify")

// VerifyRotationProof checks, on the server, a proof that the sender of a
// rotation from oldKey holds newKey's private half. The comparison is
// constant-time.
func VerifyRotationProof(serverPriv noise.PrivateKey, oldKey, newKey pubkey.Node, proof []byte) error {
	if newKey.IsZero() || newKey.IsLowOrder() {
		return ErrBadProof
	}
	ss, err := serverPriv.SharedSecret(newKey.PublicKey)
	if err != nil {
		return ErrBadProof
	}
	defer clear(ss[:])
	if subtle.ConstantTimeCompare(rotationMAC(ss, oldKey.PublicKey, newKey.PublicKey), proof) != 1 {
		return ErrBadProof
	}
	return nil
}
