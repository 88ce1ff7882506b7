package device

import (
	"math"
	"time"
)

// Protocol limits from the WireGuard paper (section 6) and the reference
// implementations.
const (
	RekeyAfterMessages      = 1 << 60
	RejectAfterMessages     = math.MaxUint64 - (1 << 13) - 1
	RekeyAfterTime          = 120 * time.Second
	RekeyAttemptTime        = 90 * time.Second
	RekeyTimeout            = 5 * time.Second
	MaxTimerHandshakes      = int(RekeyAttemptTime / RekeyTimeout) // 18
	RekeyTimeoutJitterMax   = 334 * time.Millisecond
	RejectAfterTime         = 180 * time.Second
	KeepaliveTimeout        = 10 * time.Second
	ZeroKeyMaterialAfter    = 3 * RejectAfterTime // 540 s
	HandshakeInitiationRate = time.Second / 50    // min gap between accepted initiations
	// RekeyOnReceiveAge: an initiator whose current key is this old starts a
	// new handshake when it receives data, so that a key is replaced before
	// the responder stops accepting it.
	RekeyOnReceiveAge = RejectAfterTime - KeepaliveTimeout - RekeyTimeout // 165 s
)

// Engine sizes.
const (
	MaxPeers              = 1 << 16
	MaxStagedPackets      = 128
	QueueHandshakeSize    = 1024
	UnderLoadQueueLen     = QueueHandshakeSize / 8 // 128
	UnderLoadAfterTime    = time.Second
	QueueCryptSize        = 1024 // batches
	QueuePeerSize         = 1024 // batches per peer per direction
	MaxMessageSize        = 65535
	MessageTransportStart = 16 // offset of the plaintext inside a buffer
	DefaultMTU            = 1420
)
