package tlsserve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// writePair writes a self-signed certificate for name with the given
// serial, and its key, to certFile and keyFile; it returns the
// certificate (for the client to trust).
func writePair(t *testing.T, certFile, keyFile, name string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written to temporary files and renamed, as an operator's tool would.
	for file, blk := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(file+".new", pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// serve serves c's TLS config on loopback with a handler saying "ok".
func serve(t *testing.T, c *Certs) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
		TLSConfig: c.TLSConfig(), ReadHeaderTimeout: 10 * time.Second}
	go hs.ServeTLS(l, "", "")
	t.Cleanup(func() { hs.Close() })
	return l.Addr().String()
}

// servedSerial connects to addr as name, trusting roots, and returns the
// serial of the certificate served (-1 if the handshake failed).
func servedSerial(addr, name string, roots *x509.CertPool) int64 {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return -1
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestSIGHUPSwapsFileCert: a real SIGHUP makes a running listener serve
// the new pair written over the files, without a restart; a broken file
// then keeps the pair served and logs one line.
func TestSIGHUPSwapsFileCert(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	roots := x509.NewCertPool()
	roots.AddCert(writePair(t, certFile, keyFile, "warren.example", 1))
	log, rec := logtest.New()
	c, err := New(Options{CertFile: certFile, KeyFile: keyFile, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Names(), ","); got != "warren.example,warren.example" {
		t.Errorf("names %q", got)
	}
	addr := serve(t, c)
	if got := servedSerial(addr, "warren.example", roots); got != 1 {
		t.Fatalf("served serial %d, want 1", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	config.OnSIGHUP(ctx, func() { c.Reload("", "") })

	roots.AddCert(writePair(t, certFile, keyFile, "warren.example", 2))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the new certificate served after SIGHUP", func() bool {
		return servedSerial(addr, "warren.example", roots) == 2
	})
	if r, ok := rec.Find("tls: certificate reloaded"); !ok || r.Level != slog.LevelInfo || r.Attrs["serial"] != "2" {
		t.Errorf("reload not logged: %q", rec.Text())
	}

	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the failed reload logged", func() bool {
		_, ok := rec.Find("tls: reload failed")
		return ok
	})
	r, _ := rec.Find("tls: reload failed")
	if r.Level != slog.LevelError || !strings.Contains(r.Attrs["err"], certFile) || strings.Contains(r.String(), "\n") {
		t.Errorf("failure logged as %v", r)
	}
	if got := servedSerial(addr, "warren.example", roots); got != 2 {
		t.Errorf("after a bad file: served serial %d, want the previous 2", got)
	}
}

// TestLoadCertFilesErrors: a missing key, a key of another certificate
// and an expired certificate are refused at start, naming the file.
func TestLoadCertFilesErrors(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := filepath.Join(dir, "c1.pem"), filepath.Join(dir, "k1.pem")
	c2, k2 := filepath.Join(dir, "c2.pem"), filepath.Join(dir, "k2.pem")
	writePair(t, c1, k1, "a.example", 1)
	writePair(t, c2, k2, "b.example", 2)
	for _, tc := range []struct{ cert, key, want string }{
		{c1, filepath.Join(dir, "missing.pem"), "missing.pem"},
		{c1, k2, "private key does not match public key"},
		{c1, "", "needs both"},
	} {
		if _, err := New(Options{CertFile: tc.cert, KeyFile: tc.key}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s + %s: %v, want %q", tc.cert, tc.key, err, tc.want)
		}
	}
	if c, err := New(Options{}); c != nil || err != nil {
		t.Errorf("no TLS: %v %v", c, err)
	}
}

// TestHTTPRedirect: without ACME the port-80 handler redirects to https.
func TestHTTPRedirect(t *testing.T) {
	dir := t.TempDir()
	writePair(t, filepath.Join(dir, "c"), filepath.Join(dir, "k"), "a.example", 1)
	c, err := New(Options{CertFile: filepath.Join(dir, "c"), KeyFile: filepath.Join(dir, "k")})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{"a.example:80": "https://a.example/x?y=1", "[::1]:80": "https://[::1]/x?y=1", "a.example": "https://a.example/x?y=1"} {
		req, _ := http.NewRequest("GET", "http://"+host+"/x?y=1", nil)
		rw := &recorder{h: http.Header{}}
		c.HTTPHandler(nil).ServeHTTP(rw, req)
		if rw.code != http.StatusFound || rw.h.Get("Location") != want {
			t.Errorf("%s: %d %q, want %q", host, rw.code, rw.h.Get("Location"), want)
		}
	}
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(code int)        { r.code = code }

// TestOptionsFrom: the relay's TLS keys become Options, and an ACME
// config gives Certs whose names are the ACME hosts.
func TestOptionsFrom(t *testing.T) {
	c, err := config.Relay.Check(writeConfig(t, "tls_acme: [relay.example, relay2.example]\ntls_acme_email: ops@example.com\ntls_acme_directory: https://ca.example/dir\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	o := OptionsFrom(c, config.RelayTLS, state, nil)
	if strings.Join(o.ACMEHosts, ",") != "relay.example,relay2.example" || o.ACMEEmail != "ops@example.com" ||
		o.ACMEDirectory != "https://ca.example/dir" || o.StateDir != state || o.CertFile != "" {
		t.Errorf("options %+v", o)
	}
	certs, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if !certs.ACME() || strings.Join(certs.Names(), ",") != "relay.example,relay2.example" {
		t.Errorf("acme %v names %v", certs.ACME(), certs.Names())
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
