package store

import (
	"crypto/sha256"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// nodeKeyOf derives a distinct, valid node key from a test's name for it.
func nodeKeyOf(name string) pubkey.Node {
	return pubkey.Node{PublicKey: noise.NewPrivateKey(sha256.Sum256([]byte("node key " + name))).PublicKey()}
}

// discoKeyOf derives a distinct, valid disco key from a test's name for it.
func discoKeyOf(name string) pubkey.Disco {
	return pubkey.Disco{PublicKey: noise.NewPrivateKey(sha256.Sum256([]byte("disco key " + name))).PublicKey()}
}
