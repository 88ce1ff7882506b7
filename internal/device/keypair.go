package device

import (
	"crypto/cipher"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/replay"
)

// Keypair is one session: the transport keys derived from a handshake.
type Keypair struct {
	send        cipher.AEAD
	recv        cipher.AEAD
	sendNonce   atomic.Uint64
	replayMu    sync.Mutex
	replay      replay.Filter
	created     time.Time
	initiator   bool
	localIndex  uint32
	remoteIndex uint32
	peer        *Peer
	// rekeyOnReceive is set once a rekey was triggered by receiving on an
	// old key, so it is triggered only once per key.
	rekeyOnReceive atomic.Bool
}

func newKeypair(p *Peer, send, recv [32]byte, initiator bool, local, remote uint32, now time.Time) *Keypair {
	kp := &Keypair{created: now, initiator: initiator, localIndex: local, remoteIndex: remote, peer: p}
	kp.send, _ = chacha20poly1305.New(send[:])
	kp.recv, _ = chacha20poly1305.New(recv[:])
	noise.Zero(send[:])
	noise.Zero(recv[:])
	return kp
}

// keypairs is a peer's three sessions: the previous one (still accepted for
// late packets), the current one (used to send), and the next one (a
// responder's new session, used once the initiator has confirmed it by
// sending on it).
type keypairs struct {
	sync.RWMutex
	previous, current, next *Keypair
}

func (k *keypairs) Current() *Keypair {
	k.RLock()
	defer k.RUnlock()
	return k.current
}

// indexTable maps our receiver indices to handshakes and sessions.
type indexTable struct {
	sync.RWMutex
	m map[uint32]indexEntry
}

type indexEntry struct {
	peer    *Peer
	keypair *Keypair // nil while the index names a handshake in progress
}

func (t *indexTable) init() { t.m = make(map[uint32]indexEntry) }

// newIndex registers a fresh random index for p's handshake.
func (t *indexTable) newIndex(p *Peer) uint32 {
	for {
		idx := randUint32()
		t.Lock()
		if _, ok := t.m[idx]; !ok && idx != 0 {
			t.m[idx] = indexEntry{peer: p}
			t.Unlock()
			return idx
		}
		t.Unlock()
	}
}

// bind attaches a session to an index of its peer's handshake.
func (t *indexTable) bind(idx uint32, kp *Keypair) {
	t.Lock()
	defer t.Unlock()
	if e, ok := t.m[idx]; ok && e.peer == kp.peer {
		t.m[idx] = indexEntry{peer: e.peer, keypair: kp}
	}
}

func (t *indexTable) delete(idx uint32) {
	if idx == 0 {
		return
	}
	t.Lock()
	delete(t.m, idx)
	t.Unlock()
}

func (t *indexTable) lookup(idx uint32) (indexEntry, bool) {
	t.RLock()
	e, ok := t.m[idx]
	t.RUnlock()
	return e, ok
}
