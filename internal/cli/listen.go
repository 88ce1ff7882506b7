package cli

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

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

// perSourceCap reads --max-conns-per-ip.
func (c serverConfig) perSourceCap() (int, error) {
	return parsePerSourceCap(c.MaxConnsPerIP)
}

func parsePerSourceCap(s string) (int, error) {
	if s == "" {
		return httpguard.DefaultPerSource, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--max-conns-per-ip %q: want a number, 0 for no cap", s)
	}
	return n, nil
}

// listenerSetting reads the config keys that may also be given as a number
// (max_conns_per_ip, relay_rate, relay_burst, relay_queue) or a list of
// strings (allowed_hosts).
func listenerSetting(key string, raw json.RawMessage) (string, bool) {
	switch key {
	case "max_conns_per_ip", "relay_rate", "relay_burst", "relay_queue":
		var n json.Number
		if err := json.Unmarshal(raw, &n); err == nil {
			return n.String(), true
		}
	case "allowed_hosts":
		var l []string
		if err := json.Unmarshal(raw, &l); err == nil {
			return strings.Join(l, ","), true
		}
	}
	return "", false
}

// splitHosts reads a comma- or space-separated host list.
func splitHosts(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// listenerHosts returns the names a listener on listen serves besides IP
// literals and localhost: the listen host, publicURL's host, the names of
// the certificate in certFile, the machine's host name and extra.
func listenerHosts(listen, publicURL, certFile, extra string) []string {
	var names []string
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		names = append(names, h)
	}
	if publicURL != "" {
		names = append(names, publicURL)
	}
	names = append(names, certNames(certFile)...)
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	return append(names, splitHosts(extra)...)
}

// certNames returns the DNS names of the first certificate in a PEM file
// (none when it cannot be read: serving it fails with a clear error).
func certNames(certFile string) []string {
	if certFile == "" {
		return nil
	}
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil
		}
		names := cert.DNSNames
		if cert.Subject.CommonName != "" {
			names = append(names, cert.Subject.CommonName)
		}
		return names
	}
}

// guardPublic makes hs and l a public listener: hs's handler behind the
// Host and cross-origin checks (names as for httpguard.Policy), the public
// timeouts, and at most perSource connections from one source address on
// the listener returned.
func guardPublic(hs *http.Server, l net.Listener, names []string, perSource int, hint string, log *slog.Logger) net.Listener {
	hs.Handler = httpguard.Wrap(hs.Handler, httpguard.Policy{Names: names, Logger: log, Hint: hint})
	publicTimeouts.Apply(hs)
	return httpguard.LimitListener(l, perSource, log)
}
