package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Identity is who signed in to the console.
type Identity struct {
	// User is shown in the console and names the person in logs (an
	// admin API key's prefix, or the identity provider's user).
	User string
	// Admin is whether the person may administer the network; only
	// admins get a session.
	Admin bool
	// Method is how they signed in: "apikey", or an Authenticator's ID.
	Method string
	// APIKeyID is the admin API key signed in with (0 for other methods):
	// the session ends when that key is deleted or expires.
	APIKeyID int64
	// keyPrefix is that key's prefix (for the audit log).
	keyPrefix string
}

// actor names the person in the audit log, as the admin API does.
func (id Identity) actor() string {
	if id.APIKeyID != 0 {
		return "apikey:wapi_" + id.keyPrefix
	}
	return "user:" + id.User
}

// session is one signed-in browser. Only the hash of its cookie's token
// is kept, so the table leaks no usable cookie.
type session struct {
	id      Identity
	csrf    string // per-session token every state-changing form carries
	created time.Time
	seen    time.Time
	flash   string // a one-time message for the next page
}

// sessions is the server-side session table.
type sessions struct {
	idle, max time.Duration
	limit     int

	mu sync.Mutex
	m  map[[32]byte]*session
}

func newSessions(idle, max time.Duration, limit int) *sessions {
	return &sessions{idle: idle, max: max, limit: limit, m: map[[32]byte]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func tokenHash(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }

// create starts a session for id and returns its cookie token.
func (s *sessions) create(id Identity, now time.Time) string {
	tok := randomToken()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	if len(s.m) >= s.limit { // drop the oldest rather than grow without bound
		var oldest [32]byte
		var t time.Time
		for k, ss := range s.m {
			if t.IsZero() || ss.created.Before(t) {
				oldest, t = k, ss.created
			}
		}
		delete(s.m, oldest)
	}
	s.m[tokenHash(tok)] = &session{id: id, csrf: randomToken(), created: now, seen: now}
	return tok
}

// get returns a copy of the live session of tok and marks it used.
func (s *sessions) get(tok string, now time.Time) (session, bool) {
	if tok == "" {
		return session{}, false
	}
	h := tokenHash(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[h]
	if !ok {
		return session{}, false
	}
	if s.expired(ss, now) {
		delete(s.m, h)
		return session{}, false
	}
	ss.seen = now
	return *ss, true
}

// takeFlash returns and clears the session's one-time message.
func (s *sessions) takeFlash(tok string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.m[tokenHash(tok)]; ok {
		f := ss.flash
		ss.flash = ""
		return f
	}
	return ""
}

func (s *sessions) setFlash(tok, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.m[tokenHash(tok)]; ok {
		ss.flash = msg
	}
}

// delete ends the session of tok.
func (s *sessions) delete(tok string) {
	s.mu.Lock()
	delete(s.m, tokenHash(tok))
	s.mu.Unlock()
}

// endKey ends every session signed in with API key id.
func (s *sessions) endKey(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, ss := range s.m {
		if ss.id.APIKeyID == id {
			delete(s.m, k)
		}
	}
}

// deadline is when a session ends if it is not used again.
func (s *sessions) deadline(ss *session) time.Time {
	idle, max := ss.seen.Add(s.idle), ss.created.Add(s.max)
	if idle.Before(max) {
		return idle
	}
	return max
}

func (s *sessions) expired(ss *session, now time.Time) bool { return !now.Before(s.deadline(ss)) }

func (s *sessions) sweepLocked(now time.Time) {
	for k, ss := range s.m {
		if s.expired(ss, now) {
			delete(s.m, k)
		}
	}
}

// csrfOK reports whether a form's token is the session's.
func csrfOK(ss *session, r *http.Request) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) == 1
}
