package noise

import (
	"crypto/rand"
	"crypto/subtle"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/warrenmesh/warren/internal/wire"
)

// CookieRefreshTime is how long a cookie secret, and a cookie, are valid.
const CookieRefreshTime = 120 * time.Second

func labelKey(label string, pub PublicKey) [blake2s.Size]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte(label))
	h.Write(pub[:])
	var out [blake2s.Size]byte
	h.Sum(out[:0])
	return out
}

// CookieChecker verifies MAC1/MAC2 of handshake messages sent to us and
// makes cookie replies when we are under load. Safe for concurrent use.
type CookieChecker struct {
	mu        sync.RWMutex
	mac1Key   [blake2s.Size]byte
	cookieKey [blake2s.Size]byte
	secret    [blake2s.Size]byte
	secretAt  time.Time
}

// Init keys the checker with our static public key (call on key change).
func (c *CookieChecker) Init(local PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mac1Key = labelKey(LabelMAC1, local)
	c.cookieKey = labelKey(LabelCookie, local)
	c.secretAt = time.Time{}
}

// CheckMAC1 reports whether msg (an initiation or response) carries a valid
// MAC1 for our public key. Messages without it are dropped before any DH.
func (c *CookieChecker) CheckMAC1(msg []byte) bool {
	if len(msg) < 2*wire.MacSize {
		return false
	}
	off := len(msg) - 2*wire.MacSize
	c.mu.RLock()
	m := mac(c.mac1Key[:], msg[:off])
	c.mu.RUnlock()
	return subtle.ConstantTimeCompare(m[:], msg[off:off+wire.MacSize]) == 1
}

// CheckMAC2 reports whether msg carries a MAC2 made with the cookie we would
// give src (the sender's address bytes) now.
func (c *CookieChecker) CheckMAC2(msg, src []byte, now time.Time) bool {
	if len(msg) < wire.MacSize {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.secretAt.IsZero() || now.Sub(c.secretAt) > CookieRefreshTime {
		return false
	}
	cookie := mac(c.secret[:], src)
	off := len(msg) - wire.MacSize
	m := mac(cookie[:], msg[:off])
	return subtle.ConstantTimeCompare(m[:], msg[off:]) == 1
}

// CreateReply builds the cookie reply to msg (whose MAC1 was valid) for the
// sender at src, to be sent to sender index receiver.
func (c *CookieChecker) CreateReply(msg []byte, receiver uint32, src []byte, now time.Time, out *wire.CookieReply) error {
	c.mu.Lock()
	if c.secretAt.IsZero() || now.Sub(c.secretAt) > CookieRefreshTime {
		if _, err := rand.Read(c.secret[:]); err != nil {
			c.mu.Unlock()
			return err
		}
		c.secretAt = now
	}
	cookie := mac(c.secret[:], src)
	cookieKey := c.cookieKey
	c.mu.Unlock()

	off := len(msg) - 2*wire.MacSize
	out.Receiver = receiver
	if _, err := rand.Read(out.Nonce[:]); err != nil {
		return err
	}
	a, _ := chacha20poly1305.NewX(cookieKey[:])
	a.Seal(out.Cookie[:0], out.Nonce[:], cookie[:], msg[off:off+wire.MacSize])
	return nil
}

// CookieGenerator adds MAC1/MAC2 to the handshake messages we send to one
// peer and keeps the cookie that peer gave us. Safe for concurrent use.
type CookieGenerator struct {
	mu          sync.Mutex
	mac1Key     [blake2s.Size]byte
	cookieKey   [blake2s.Size]byte
	cookie      [wire.MacSize]byte
	cookieAt    time.Time
	lastMAC1    [wire.MacSize]byte
	hasLastMAC1 bool
}

// Init keys the generator with the peer's static public key.
func (g *CookieGenerator) Init(remote PublicKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mac1Key = labelKey(LabelMAC1, remote)
	g.cookieKey = labelKey(LabelCookie, remote)
	g.cookieAt = time.Time{}
	g.hasLastMAC1 = false
}

// AddMACs writes MAC1, and MAC2 when we hold a fresh cookie, into the last
// 32 bytes of msg (a marshalled initiation or response).
func (g *CookieGenerator) AddMACs(msg []byte, now time.Time) {
	off := len(msg) - 2*wire.MacSize
	g.mu.Lock()
	defer g.mu.Unlock()
	m1 := mac(g.mac1Key[:], msg[:off])
	copy(msg[off:], m1[:])
	g.lastMAC1 = m1
	g.hasLastMAC1 = true
	if g.cookieAt.IsZero() || now.Sub(g.cookieAt) > CookieRefreshTime {
		clear(msg[off+wire.MacSize:])
		return
	}
	m2 := mac(g.cookie[:], msg[:off+wire.MacSize])
	copy(msg[off+wire.MacSize:], m2[:])
}

// ConsumeReply decrypts a cookie reply to the last message we sent this
// peer. It reports false for a forged or stale reply, which is ignored.
func (g *CookieGenerator) ConsumeReply(r *wire.CookieReply, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.hasLastMAC1 {
		return false
	}
	a, _ := chacha20poly1305.NewX(g.cookieKey[:])
	var cookie [wire.MacSize]byte
	if _, err := a.Open(cookie[:0], r.Nonce[:], r.Cookie[:], g.lastMAC1[:]); err != nil {
		return false
	}
	g.cookie = cookie
	g.cookieAt = now
	g.hasLastMAC1 = false
	return true
}
