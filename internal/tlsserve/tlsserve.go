// Package tlsserve owns the HTTPS certificates of `warren server` and
// `warren relay`: either PEM files re-read without a restart (Reload, on
// SIGHUP), or certificates obtained and renewed from an ACME CA (Let's
// Encrypt by default) with golang.org/x/crypto/acme/autocert, cached in a
// directory of the state dir. autocert answers TLS-ALPN-01 challenges on
// the HTTPS listener itself (the CA connects to port 443 of the name) and
// HTTP-01 challenges through HTTPHandler on a port-80 listener, when one
// is configured. A command builds one Certs, serves its TLSConfig, and
// mounts HTTPHandler on the HTTP-01 listener if any.
package tlsserve

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/warrenmesh/warren/internal/config"
)

// ACMECacheDir is the directory under the state directory that holds the
// ACME account key and certificates (created 0700).
const ACMECacheDir = "acme"

// Options say where certificates come from: CertFile and KeyFile, or
// ACMEHosts.
type Options struct {
	CertFile, KeyFile string

	// ACMEHosts are the names to obtain certificates for; requests for
	// other names get no certificate.
	ACMEHosts []string
	// ACMEEmail is the contact given to the CA (optional).
	ACMEEmail string
	// ACMEDirectory is the CA's directory URL (autocert's default: Let's
	// Encrypt).
	ACMEDirectory string
	// StateDir holds the cache, in StateDir/acme.
	StateDir string
	// ACMEHTTPClient talks to the CA (nil: http.DefaultClient; tests trust
	// their CA with it).
	ACMEHTTPClient *http.Client
	// RenewBefore is how long before expiry a certificate is renewed (0:
	// autocert's default, a third of its lifetime, at most 30 days).
	RenewBefore time.Duration

	Logger *slog.Logger
}

// Certs are the certificates a listener serves.
type Certs struct {
	files *CertFiles
	acme  *autocert.Manager
	hosts []string
	// noSNI is served (with ACME) to clients that name no host, such as
	// the readiness self-probe and health checks by IP address: a
	// self-signed certificate no client trusts, where autocert would
	// fail the handshake.
	noSNI *tls.Certificate
	log   *slog.Logger
}

// New returns the Certs of o, or nil with no error when o names no
// certificate (plain HTTP).
func New(o Options) (*Certs, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.CertFile != "" && len(o.ACMEHosts) > 0:
		return nil, errors.New("tls: certificate files and ACME: give one")
	case o.CertFile != "" || o.KeyFile != "":
		f, err := LoadCertFiles(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, err
		}
		return &Certs{files: f, log: log}, nil
	case len(o.ACMEHosts) > 0:
		if o.StateDir == "" {
			return nil, errors.New("tls: ACME needs a state directory for its cache")
		}
		m := &autocert.Manager{
			Prompt:      autocert.AcceptTOS,
			Cache:       autocert.DirCache(filepath.Join(o.StateDir, ACMECacheDir)),
			HostPolicy:  autocert.HostWhitelist(o.ACMEHosts...),
			Email:       o.ACMEEmail,
			RenewBefore: o.RenewBefore,
			Client:      &acme.Client{DirectoryURL: o.ACMEDirectory, HTTPClient: o.ACMEHTTPClient, UserAgent: "warren"},
		}
		noSNI, err := selfSigned()
		if err != nil {
			return nil, err
		}
		return &Certs{acme: m, hosts: append([]string(nil), o.ACMEHosts...), noSNI: noSNI, log: log}, nil
	}
	return nil, nil
}

// TLSConfig is the listener's TLS configuration: TLS 1.2 or newer, h2 and
// http/1.1 (as net/http's ServeTLS offers), and acme-tls/1 for ACME's
// TLS-ALPN-01 challenges.
func (c *Certs) TLSConfig() *tls.Config {
	if c.acme != nil {
		tc := c.acme.TLSConfig()
		tc.MinVersion = tls.VersionTLS12
		tc.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h.ServerName == "" {
				return c.noSNI, nil
			}
			return c.acme.GetCertificate(h)
		}
		return tc
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}, GetCertificate: c.files.GetCertificate}
}

// HTTPHandler answers ACME HTTP-01 challenges (on a listener reached as
// port 80 of the names) and passes other requests to fallback, or, when
// fallback is nil, redirects them to https. It also enables HTTP-01 for
// the certificates obtained afterwards; without it only TLS-ALPN-01 is
// tried. With certificate files it is fallback (or the redirect).
func (c *Certs) HTTPHandler(fallback http.Handler) http.Handler {
	if c.acme != nil {
		h := c.acme.HTTPHandler(fallback)
		// autocert checks the Host header, port included, against the
		// names: strip the port, so that the challenge is also answered
		// on a port 80 forwarded to another one.
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if host := redirectHost(r.Host); host != r.Host && strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
				r = r.Clone(r.Context())
				r.Host = host
			}
			h.ServeHTTP(w, r)
		})
	}
	if fallback != nil {
		return fallback
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" && r.Method != "HEAD" {
			http.Error(w, "use https", http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, "https://"+redirectHost(r.Host)+r.URL.RequestURI(), http.StatusFound)
	})
}

// redirectHost is the Host of a request without its port.
func redirectHost(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

// Names are the host names the certificates are for (a listener's Host
// check serves them).
func (c *Certs) Names() []string {
	if c.acme != nil {
		return append([]string(nil), c.hosts...)
	}
	return c.files.Names()
}

// ACME reports whether the certificates come from an ACME CA.
func (c *Certs) ACME() bool { return c.acme != nil }

// Reload re-reads the certificate files (from new paths, when certFile
// and keyFile are not ""; "" keeps the paths) and logs one line: the new
// certificate's names and expiry, or why the old one stays. With ACME it
// does nothing (autocert renews by itself).
func (c *Certs) Reload(certFile, keyFile string) error {
	if c.files == nil {
		return nil
	}
	if err := c.files.Reload(certFile, keyFile); err != nil {
		leaf := c.files.Current().Leaf
		c.log.Error("tls: reload failed, still serving the previous certificate", "err", err,
			"expires", leaf.NotAfter.UTC().Format(time.RFC3339))
		return err
	}
	leaf := c.files.Current().Leaf
	c.log.Info("tls: certificate reloaded", "names", c.files.Names(), "serial", fmt.Sprintf("%x", leaf.SerialNumber),
		"expires", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// selfSigned makes the certificate for clients without SNI.
func selfSigned() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "warren (no server name given)"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(100 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// OptionsFrom reads the TLS keys k (config.ServerTLS or config.RelayTLS)
// of a loaded config; the ACME cache goes under stateDir (the data_dir).
func OptionsFrom(c *config.Config, k config.TLSKeys, stateDir string, log *slog.Logger) Options {
	return Options{
		CertFile: config.Get(c, k.Cert), KeyFile: config.Get(c, k.Key),
		ACMEHosts: config.Get(c, k.ACME), ACMEEmail: config.Get(c, k.ACMEEmail),
		ACMEDirectory: config.Get(c, k.ACMEDirectory), StateDir: stateDir, Logger: log,
	}
}
