// Package httpguard owns what every Warren HTTP listener does before its
// handlers see a request or a connection: the Host check that defeats DNS
// rebinding (a web page in a browser on the machine that points a name it
// controls at 127.0.0.1 or a tunnel address, so that its requests reach a
// Warren listener as "same origin"), the refusal of browser cross-origin
// requests that change state, the timeouts of public listeners, and the
// cap on concurrent connections per source address.
//
// The Host rule: an IP literal always passes (a page cannot make a browser
// send a request for one IP to another address, so rebinding needs a
// name), so does "localhost" (browsers resolve it themselves, never through
// DNS); any other name passes only when the listener serves it (its public
// URL's host, its certificate's names, the node's MagicDNS name, names the
// operator added). Everything else gets 421 Misdirected Request and one
// line naming the host (not 403, which Warren's clients read as a key
// problem). Cross-origin browser requests that change state get 403.
package httpguard

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Policy says which Host names a listener serves.
type Policy struct {
	// Names are host names served besides IP literals and "localhost"
	// (case-insensitive; a port, a scheme or a trailing dot is ignored,
	// so URLs and HOST:PORT may be given as they are).
	Names []string
	// Also, if set, is asked about a (normalised) name not in Names, for
	// names that change while the listener runs (a node's MagicDNS name).
	Also func(name string) bool
	// Logger reports refused requests at warning level (at most one line
	// every few seconds); nil discards.
	Logger *slog.Logger
	// Hint is appended to the refusal, e.g. how to add a name.
	Hint string
}

// Guard is a Policy compiled for serving.
type Guard struct {
	names   map[string]bool
	also    func(string) bool
	log     *slog.Logger
	hint    string
	cop     *http.CrossOriginProtection
	refused atomic.Uint64

	mu      sync.Mutex
	lastLog time.Time
}

// New compiles p.
func New(p Policy) *Guard {
	g := &Guard{names: map[string]bool{}, also: p.Also, log: orDiscard(p.Logger), hint: p.Hint, cop: http.NewCrossOriginProtection()}
	for _, n := range p.Names {
		if n = Hostname(n); n != "" {
			g.names[n] = true
		}
	}
	return g
}

// Handler wraps next with g's checks.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.Allowed(r.Host) {
			g.refuse(w, r, http.StatusMisdirectedRequest, fmt.Sprintf("host %q is not served here (DNS rebinding protection)%s", r.Host, g.hint))
			return
		}
		// Browser requests from another origin that change state
		// (anything but GET, HEAD, OPTIONS): Sec-Fetch-Site, or Origin
		// against Host for older browsers. Requests without either
		// header (Warren's own clients, curl) pass.
		if err := g.cop.Check(r); err != nil {
			g.refuse(w, r, http.StatusForbidden, "cross-origin request refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Wrap wraps next with the checks of p.
func Wrap(next http.Handler, p Policy) http.Handler { return New(p).Handler(next) }

// Refused counts the requests g refused.
func (g *Guard) Refused() uint64 { return g.refused.Load() }

func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	g.refused.Add(1)
	g.mu.Lock()
	now := time.Now()
	log := now.Sub(g.lastLog) >= 5*time.Second
	if log {
		g.lastLog = now
	}
	g.mu.Unlock()
	if log {
		g.log.Warn("http: refused request", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr, "reason", msg)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// Allowed reports whether a request with this Host header is for g's
// listener.
func (g *Guard) Allowed(hostHeader string) bool {
	if hostHeader == "" || strings.ContainsAny(hostHeader, "/@ \t") {
		return false
	}
	h := hostOnly(hostHeader)
	if _, err := netip.ParseAddr(strings.TrimPrefix(strings.TrimSuffix(h, "]"), "[")); err == nil {
		return true
	}
	h = normalise(h)
	if h == "" {
		return false
	}
	if h == "localhost" || g.names[h] {
		return true
	}
	return g.also != nil && g.also(h)
}

// Hostname returns the normalised host name of s, which may be a name, a
// HOST:PORT or a URL: lower case, no port, brackets or trailing dot.
func Hostname(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
		if j := strings.IndexAny(s, "/?#"); j >= 0 {
			s = s[:j]
		}
		if j := strings.LastIndexByte(s, '@'); j >= 0 {
			s = s[j+1:]
		}
	}
	return normalise(strings.TrimSuffix(strings.TrimPrefix(hostOnly(s), "["), "]"))
}

func hostOnly(s string) string {
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

func normalise(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// orDiscard is l, or a logger that discards when l is nil (the rule of every
// Logger option in Warren).
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
