package tlsserve

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// CertFiles serves a certificate and key read from PEM files, re-read by
// Reload (on SIGHUP) without a restart: GetCertificate always returns the
// pair read last, and a new pair that does not load keeps the old one.
type CertFiles struct {
	mu        sync.Mutex // serialises Reload
	cert, key string
	cur       atomic.Pointer[tls.Certificate]
}

// LoadCertFiles reads a certificate (PEM, chain after the leaf) and its
// key; the error names the file and the problem.
func LoadCertFiles(certFile, keyFile string) (*CertFiles, error) {
	c := &CertFiles{}
	if err := c.Reload(certFile, keyFile); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the pair again, from new paths if certFile and keyFile
// are not "" (a changed tls_cert/tls_key). On error the pair served so
// far stays, and the paths too.
func (c *CertFiles) Reload(certFile, keyFile string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if certFile == "" {
		certFile, keyFile = c.cert, c.key
	}
	if certFile == "" || keyFile == "" {
		return errors.New("tls: a certificate needs both a certificate and a key file")
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("tls: %s, %s: %v", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("tls: %s: %v", certFile, err)
		}
	}
	if !time.Now().Before(pair.Leaf.NotAfter) {
		return fmt.Errorf("tls: %s expired at %s", certFile, pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c.cert, c.key = certFile, keyFile
	c.cur.Store(&pair)
	return nil
}

// Current is the pair being served.
func (c *CertFiles) Current() *tls.Certificate { return c.cur.Load() }

// GetCertificate is for tls.Config.GetCertificate.
func (c *CertFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// Names are the DNS names of the certificate served (and its subject's
// common name).
func (c *CertFiles) Names() []string {
	leaf := c.cur.Load().Leaf
	names := append([]string(nil), leaf.DNSNames...)
	if leaf.Subject.CommonName != "" {
		names = append(names, leaf.Subject.CommonName)
	}
	return names
}
