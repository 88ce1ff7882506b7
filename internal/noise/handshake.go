package noise

import (
	"crypto/subtle"
	"errors"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/warrenmesh/warren/internal/tai64n"
	"github.com/warrenmesh/warren/internal/wire"
)

// State is where a Handshake stands.
type State int

const (
	StateZeroed             State = iota
	StateInitiationCreated        // initiator: initiation sent, waiting for a response
	StateInitiationConsumed       // responder: valid initiation received
	StateResponseCreated          // responder: response sent; keys derivable
	StateResponseConsumed         // initiator: response received; keys derivable
)

// Errors of the handshake. None of them may lead to a packet being sent.
var (
	ErrDecrypt   = errors.New("noise: authentication failed")
	ErrState     = errors.New("noise: message not expected in this state")
	ErrReplay    = errors.New("noise: timestamp not newer than the last one")
	ErrNoPrivate = errors.New("noise: no private key")
)

// Static is the local static identity with the keys derived from it.
type Static struct {
	Private PrivateKey
	Public  PublicKey
}

// NewStatic derives the public half of priv.
func NewStatic(priv PrivateKey) *Static {
	return &Static{Private: priv, Public: priv.PublicKey()}
}

// Handshake is the per-peer handshake state. The engine guards it with the
// peer's lock and fills RemoteStatic, PresharedKey and PrecomputedSS when the
// peer is configured (see Precompute).
type Handshake struct {
	State          State
	RemoteStatic   PublicKey
	PresharedKey   PresharedKey
	PrecomputedSS  [KeySize]byte // DH(local static, remote static); zero if low-order
	LocalIndex     uint32
	RemoteIndex    uint32
	LastTimestamp  tai64n.Timestamp
	hash           [blake2s.Size]byte
	chainKey       [blake2s.Size]byte
	localEphemeral PrivateKey
	remoteEphem    PublicKey
}

// Precompute sets the static-static DH for the peer. It reports false, and
// leaves it zero, when the remote key is a low-order point: such a peer can
// never complete a handshake and no handshake packet is ever built for it.
func (h *Handshake) Precompute(local *Static) bool {
	if local == nil || local.Private.IsZero() {
		Zero(h.PrecomputedSS[:])
		return false
	}
	ss, err := local.Private.SharedSecret(h.RemoteStatic)
	h.PrecomputedSS = ss
	return err == nil
}

// Clear wipes the ephemeral state (not the configuration fields).
func (h *Handshake) Clear() {
	Zero(h.hash[:])
	Zero(h.chainKey[:])
	Zero(h.localEphemeral[:])
	Zero(h.remoteEphem[:])
	h.LocalIndex = 0
	h.RemoteIndex = 0
	h.State = StateZeroed
}

func aeadSeal(dst []byte, key [32]byte, plaintext, ad []byte) {
	var nonce [chacha20poly1305.NonceSize]byte
	a, _ := chacha20poly1305.New(key[:])
	a.Seal(dst[:0], nonce[:], plaintext, ad)
}

func aeadOpen(dst []byte, key [32]byte, ciphertext, ad []byte) error {
	var nonce [chacha20poly1305.NonceSize]byte
	a, _ := chacha20poly1305.New(key[:])
	_, err := a.Open(dst[:0], nonce[:], ciphertext, ad)
	return err
}

// CreateInitiation fills msg (all but the MACs) to start a handshake with
// h.RemoteStatic, using localIndex as our sender index.
func (s *Static) CreateInitiation(h *Handshake, localIndex uint32, now tai64n.Timestamp, msg *wire.Initiation) error {
	if s == nil || s.Private.IsZero() {
		return ErrNoPrivate
	}
	if isZero(h.PrecomputedSS[:]) {
		return ErrLowOrder
	}
	eph, err := GeneratePrivateKey()
	if err != nil {
		return err
	}
	hash := mixHash(initialHash, h.RemoteStatic[:])
	ck := initialChainKey
	ephPub := eph.PublicKey()
	ck = KDF1(ck[:], ephPub[:])
	hash = mixHash(hash, ephPub[:])

	es, err := eph.SharedSecret(h.RemoteStatic)
	if err != nil {
		return err
	}
	var key [32]byte
	ck, key = KDF2(ck[:], es[:])
	Zero(es[:])
	aeadSeal(msg.Static[:], key, s.Public[:], hash[:])
	hash = mixHash(hash, msg.Static[:])

	ck, key = KDF2(ck[:], h.PrecomputedSS[:])
	aeadSeal(msg.Timestamp[:], key, now[:], hash[:])
	hash = mixHash(hash, msg.Timestamp[:])
	Zero(key[:])

	msg.Sender = localIndex
	msg.Ephemeral = ephPub
	h.hash, h.chainKey, h.localEphemeral = hash, ck, eph
	h.LocalIndex = localIndex
	h.State = StateInitiationCreated
	return nil
}

// ConsumedInitiation is an initiation whose static key has been decrypted
// but which is not yet bound to a peer's handshake.
type ConsumedInitiation struct {
	Static    PublicKey // the initiator's static key
	sender    uint32
	ephemeral PublicKey
	hash      [blake2s.Size]byte
	chainKey  [blake2s.Size]byte
	timestamp [wire.TimestampSize + wire.TagSize]byte
}

// BeginInitiation decrypts the initiator's static key with our static
// private key. The caller looks up the peer by ci.Static and then calls
// FinishInitiation with that peer's handshake.
func (s *Static) BeginInitiation(msg *wire.Initiation, ci *ConsumedInitiation) error {
	if s == nil || s.Private.IsZero() {
		return ErrNoPrivate
	}
	hash := mixHash(initialHash, s.Public[:])
	hash = mixHash(hash, msg.Ephemeral[:])
	ck := KDF1(initialChainKey[:], msg.Ephemeral[:])
	es, err := s.Private.SharedSecret(PublicKey(msg.Ephemeral))
	if err != nil {
		return err
	}
	var key [32]byte
	ck, key = KDF2(ck[:], es[:])
	Zero(es[:])
	var static PublicKey
	if err := aeadOpen(static[:0:KeySize], key, msg.Static[:], hash[:]); err != nil {
		return ErrDecrypt
	}
	Zero(key[:])
	hash = mixHash(hash, msg.Static[:])
	*ci = ConsumedInitiation{
		Static: static, sender: msg.Sender, ephemeral: PublicKey(msg.Ephemeral),
		hash: hash, chainKey: ck, timestamp: msg.Timestamp,
	}
	return nil
}

// FinishInitiation authenticates the initiation against the peer's
// handshake: it decrypts the timestamp with the static-static secret and
// requires it to be newer than the last accepted one. Only on success is h
// changed (to StateInitiationConsumed).
func (ci *ConsumedInitiation) FinishInitiation(h *Handshake) error {
	if isZero(h.PrecomputedSS[:]) {
		return ErrLowOrder
	}
	ck, key := KDF2(ci.chainKey[:], h.PrecomputedSS[:])
	var ts tai64n.Timestamp
	if err := aeadOpen(ts[:0:wire.TimestampSize], key, ci.timestamp[:], ci.hash[:]); err != nil {
		return ErrDecrypt
	}
	Zero(key[:])
	if !ts.After(h.LastTimestamp) {
		return ErrReplay
	}
	h.hash = mixHash(ci.hash, ci.timestamp[:])
	h.chainKey = ck
	h.remoteEphem = ci.ephemeral
	h.RemoteIndex = ci.sender
	h.LastTimestamp = ts
	h.State = StateInitiationConsumed
	return nil
}

// CreateResponse answers a consumed initiation; afterwards the transport
// keys can be derived with DeriveKeys.
func (s *Static) CreateResponse(h *Handshake, localIndex uint32, msg *wire.Response) error {
	if h.State != StateInitiationConsumed {
		return ErrState
	}
	eph, err := GeneratePrivateKey()
	if err != nil {
		return err
	}
	ephPub := eph.PublicKey()
	ck := KDF1(h.chainKey[:], ephPub[:])
	hash := mixHash(h.hash, ephPub[:])
	ee, err := eph.SharedSecret(h.remoteEphem)
	if err != nil {
		return err
	}
	se, err := eph.SharedSecret(h.RemoteStatic)
	if err != nil {
		return err
	}
	ck, tau, key := responseKeys(ck, &ee, &se, &h.PresharedKey)
	hash = mixHash(hash, tau[:])
	aeadSeal(msg.Empty[:], key, nil, hash[:])
	hash = mixHash(hash, msg.Empty[:])
	Zero(tau[:])
	Zero(key[:])
	Zero(eph[:])

	msg.Sender = localIndex
	msg.Receiver = h.RemoteIndex
	msg.Ephemeral = ephPub
	h.hash, h.chainKey = hash, ck
	h.LocalIndex = localIndex
	h.State = StateResponseCreated
	return nil
}

// ConsumeResponse authenticates a response to our initiation. Only on
// success is h changed (to StateResponseConsumed).
func (s *Static) ConsumeResponse(h *Handshake, msg *wire.Response) error {
	if h.State != StateInitiationCreated || msg.Receiver != h.LocalIndex {
		return ErrState
	}
	hash := mixHash(h.hash, msg.Ephemeral[:])
	ck := KDF1(h.chainKey[:], msg.Ephemeral[:])
	ee, err := h.localEphemeral.SharedSecret(PublicKey(msg.Ephemeral))
	if err != nil {
		return err
	}
	se, err := s.Private.SharedSecret(PublicKey(msg.Ephemeral))
	if err != nil {
		return err
	}
	ck, tau, key := responseKeys(ck, &ee, &se, &h.PresharedKey)
	hash = mixHash(hash, tau[:])
	if err := aeadOpen(nil, key, msg.Empty[:], hash[:]); err != nil {
		return ErrDecrypt
	}
	hash = mixHash(hash, msg.Empty[:])
	Zero(tau[:])
	Zero(key[:])
	h.hash, h.chainKey = hash, ck
	h.RemoteIndex = msg.Sender
	h.State = StateResponseConsumed
	return nil
}

// responseKeys is the step both sides of the response take: mix the
// ephemeral-ephemeral and static-ephemeral secrets into the chaining key,
// then the preshared key, giving the new chaining key, the value τ mixed
// into the hash, and the key sealing the empty payload. It wipes ee and se.
func responseKeys(ck [32]byte, ee, se *[KeySize]byte, psk *PresharedKey) (ckOut, tau, key [32]byte) {
	ck = KDF1(ck[:], ee[:])
	ck = KDF1(ck[:], se[:])
	Zero(ee[:])
	Zero(se[:])
	return KDF3(ck[:], psk[:])
}

// DeriveKeys derives the transport keys once the handshake is complete and
// wipes the handshake's ephemeral state. send/recv are from our point of
// view; initiator reports which side we were.
func (h *Handshake) DeriveKeys() (send, recv [32]byte, initiator bool, err error) {
	switch h.State {
	case StateResponseConsumed:
		send, recv = KDF2(h.chainKey[:], nil)
		initiator = true
	case StateResponseCreated:
		recv, send = KDF2(h.chainKey[:], nil)
	default:
		return send, recv, false, ErrState
	}
	local, remote := h.LocalIndex, h.RemoteIndex
	h.Clear()
	h.LocalIndex, h.RemoteIndex = local, remote
	return send, recv, initiator, nil
}

// EqualKeys compares two keys in constant time.
func EqualKeys(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
