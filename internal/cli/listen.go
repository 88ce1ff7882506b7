package cli

import (
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/warrenmesh/warren/internal/httpguard"
)

// The public listeners of `warren server` and `warren relay`: the host
// names they answer to (package httpguard: IP literals and localhost
// always, then the public URL's host, the listen host, the TLS
// certificate's names, the machine's host name and --allowed-hosts), their
// timeouts and the cap on connections per source address.

// timeoutsConfig is the timeouts of a public listener.
type timeoutsConfig = httpguard.Timeouts

// publicTimeouts are the server's and relay's (a variable for tests).
var publicTimeouts = httpguard.PublicTimeouts

// listenerHosts returns the names a listener on listen serves besides IP
// literals and localhost: the listen host, publicURL's host, the
// machine's host name and extra (allowed_hosts). The certificate's names
// are added by the caller.
func listenerHosts(listen, publicURL string, extra []string) []string {
	var names []string
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		names = append(names, h)
	}
	if publicURL != "" {
		names = append(names, publicURL)
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	return append(names, extra...)
}

// guardPublic makes hs and l a public listener: hs's handler behind the
// Host and cross-origin checks (names and also as for httpguard.Policy),
// the public timeouts, and at most perSource connections from one source
// address on the listener returned.
func guardPublic(hs *http.Server, l net.Listener, names []string, also func(string) bool, perSource int, hint string, log *slog.Logger) net.Listener {
	hs.Handler = httpguard.Wrap(hs.Handler, httpguard.Policy{Names: names, Also: also, Logger: log, Hint: hint})
	publicTimeouts.Apply(hs)
	return httpguard.LimitListener(l, perSource, log)
}
