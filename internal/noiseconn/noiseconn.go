// Package noiseconn is the secure transport under Warren's control and
// relay protocols: a Noise IK session (Noise_IK_25519_ChaChaPoly_BLAKE2s) carried
// over an HTTP/1.1 Upgrade, so that the control channel is encrypted and
// mutually authenticated independently of TLS and stays safe over plain
// HTTP behind a reverse proxy.
//
// The node (client, Noise initiator) knows the server's static public key,
// pinned on first join, and sends its own static key encrypted in the first
// handshake message. The prologue binds the protocol name and version
// ("warren control v1" followed by a big-endian uint16 version), so peers
// speaking different versions can never complete a handshake.
//
// On the wire:
//
//	POST /warren/v1/control HTTP/1.1
//	Upgrade: warren-control-v1
//	Connection: Upgrade
//	X-Warren-Handshake: base64(uint16 version || Noise message 1)
//
//	HTTP/1.1 101 Switching Protocols
//	Upgrade: warren-control-v1
//	Connection: Upgrade
//	X-Warren-Handshake: base64(Noise message 2)
//
// after which both sides exchange frames on the hijacked connection: a
// 2-byte big-endian length followed by that many bytes of
// ChaCha20-Poly1305 ciphertext (at most MaxPlaintext bytes of plaintext plus
// a 16-byte tag), with a 64-bit counter nonce per direction, starting at 0.
// A frame that fails authentication, arrives out of order or is replayed
// fails the connection for good; so does exhausting the nonce space.
//
// A server that receives a replayed first message cannot tell it from a
// fresh one until it reads a frame: the replayer lacks the ephemeral key, so
// it can neither read the server's frames nor produce one the server
// accepts. Conn.Peer on the server is the authenticated node key; bind a
// session to it and never trust a key sent inside later messages.
package noiseconn

import (
	"errors"
	"time"

	flynn "github.com/flynn/noise"
)

const (
	// ProtocolName is the first part of the Noise prologue.
	ProtocolName = "warren control v1"
	// ProtocolVersion is the version this package speaks; it is sent in
	// clear before the first Noise message and bound into the prologue.
	ProtocolVersion uint16 = 1
	// UpgradeToken is the HTTP Upgrade token.
	UpgradeToken = "warren-control-v1"
	// Path is where Dial sends the upgrade request, relative to the server URL.
	Path = "/warren/v1/control"
	// KeyPath is where a server publishes its static public key (JSON
	// KeyInfo) for nodes to pin on first join.
	KeyPath = "/warren/v1/key"
	// HandshakeHeader carries the base64 handshake messages.
	HandshakeHeader = "X-Warren-Handshake"
	// VersionHeader is set by the server on a version-mismatch refusal to
	// the version it speaks.
	VersionHeader = "X-Warren-Version"

	// MaxPlaintext is the largest plaintext carried in one frame; Write
	// splits larger writes.
	MaxPlaintext = 4096
	// tagSize is the Poly1305 tag size.
	tagSize = 16
	// MaxCiphertext is the largest frame body accepted.
	MaxCiphertext = MaxPlaintext + tagSize
	// frameHeaderLen is the size of the length prefix.
	frameHeaderLen = 2

	// msg1Len is the IK initiation with an empty payload: e, s (+tag), tag.
	msg1Len = 32 + 32 + tagSize + tagSize
	// msg2Len is the IK response with an empty payload: e, tag.
	msg2Len = 32 + tagSize

	// DefaultHandshakeTimeout bounds the handshake on both sides when the
	// caller sets nothing tighter.
	DefaultHandshakeTimeout = 10 * time.Second

	// lastNonce is the first nonce that may not be used (Noise reserves
	// 2^64-1).
	lastNonce = ^uint64(0)
)

var (
	// ErrVersionMismatch is wrapped by Dial's error when the server speaks
	// another protocol version.
	ErrVersionMismatch = errors.New("noiseconn: control protocol version mismatch")
	// ErrRefused is wrapped by Dial's error when the server refuses the
	// upgrade or the handshake (for example because the node used a wrong
	// server key).
	ErrRefused = errors.New("noiseconn: server refused the control handshake")
	// ErrHandshake is wrapped when the handshake messages do not verify.
	ErrHandshake = errors.New("noiseconn: handshake failed")
	// ErrDecrypt is returned (wrapped) when a frame fails authentication,
	// including a replayed or reordered frame. The connection is closed.
	ErrDecrypt = errors.New("noiseconn: frame failed authentication")
	// ErrFrameSize is returned (wrapped) for a frame whose length is out of
	// range. The connection is closed.
	ErrFrameSize = errors.New("noiseconn: bad frame length")
	// ErrNonceExhausted is returned when a direction has used every nonce.
	ErrNonceExhausted = errors.New("noiseconn: nonce space exhausted, reconnect")
)

// KeyInfo is the JSON document served at KeyPath.
type KeyInfo struct {
	PublicKey string `json:"publicKey"` // base64, as noise.PublicKey.String
	Version   uint16 `json:"version"`   // control protocol version
}

var cipherSuite = flynn.NewCipherSuite(flynn.DH25519, flynn.CipherChaChaPoly, flynn.HashBLAKE2s)

// prologue returns the Noise prologue for version v.
func prologue(v uint16) []byte {
	return append([]byte(ProtocolName), byte(v>>8), byte(v))
}

// ErrResponseTooLarge is wrapped by Dial's error when the server's (or a
// proxy's) HTTP response head exceeds MaxResponseHeader bytes.
var ErrResponseTooLarge = errors.New("noiseconn: HTTP response header too large")
