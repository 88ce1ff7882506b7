// Package pubkey gives each kind of Curve25519 public key in Warren its
// own type, so that one kind cannot be passed where another is meant: a
// node's key (its WireGuard and control identity), a node's disco key (for
// path probes), the coordination server's Noise key and a relay's Noise
// key. Each type wraps noise.PublicKey, whose methods (String, IsZero,
// IsLowOrder, MarshalText, ...) it keeps; the text form is the same
// base64. The wrapped key is the field Key, for the code that does the
// cryptography.
package pubkey

import (
	"fmt"

	"github.com/warrenmesh/warren/internal/noise"
)

// Node is a node's static public key: its WireGuard identity, the key
// it proves in the control and relay handshakes, and the key the store
// finds it by.
type Node struct{ noise.PublicKey }

// Disco is a node's path-probe (disco) public key; the zero key means the
// node has reported none.
type Disco struct{ noise.PublicKey }

// ParseNode reads a node key in base64; the zero key is refused.
func ParseNode(s string) (Node, error) {
	k, err := noise.ParsePublicKey(s)
	if err != nil || k.IsZero() {
		return Node{}, fmt.Errorf("invalid node key %q", s)
	}
	return Node{k}, nil
}

// ParseDisco reads a disco key in base64; "" is the zero key (none). A
// low-order key is refused: it would make every probe's box guessable.
func ParseDisco(s string) (Disco, error) {
	if s == "" {
		return Disco{}, nil
	}
	k, err := noise.ParsePublicKey(s)
	if err != nil || k.IsLowOrder() {
		return Disco{}, fmt.Errorf("invalid disco key %q", s)
	}
	return Disco{k}, nil
}

// Text is the key's stored and listed form: base64, or "" for the zero
// key (none, or one that did not parse).
func (k Node) Text() string { return text(k.PublicKey) }

// Text is the key's stored and listed form: base64, or "" for the zero
// key (none).
func (d Disco) Text() string { return text(d.PublicKey) }

func text(k noise.PublicKey) string {
	if k.IsZero() {
		return ""
	}
	return k.String()
}

// Relay is a packet relay's static Noise key, pinned by nodes from the
// relay map. The relay embedded in the coordination server proves the
// server's key, converted explicitly.
type Relay struct{ noise.PublicKey }

// Server is the coordination server's static Noise key, which a node pins
// on first join and checks in every control handshake.
type Server struct{ noise.PublicKey }
