package tlsserve

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// The ACME tests run a real ACME CA, pebble (a tool dependency in go.mod,
// built by the test), on loopback with real validation: pebble resolves
// the test name through a DNS responder of the test (its -dnsserver) to
// 127.0.0.1 and connects to the ports its config names, which are the
// listeners under test. Nothing leaves the machine.

const testName = "warren.test"

// pebble is a running pebble.
type pebble struct {
	dir string // its directory URL
	// apiPort is the port of the directory; caFile the PEM file of the
	// certificate it serves the API with (for localhost).
	apiPort int
	caFile  string
	client  *http.Client
	roots   *x509.CertPool // the root of the certificates it issues
	out     *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pebbleDir holds the pebble binary the tests built (removed by TestMain).
var pebbleDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if pebbleDir != "" {
		os.RemoveAll(pebbleDir)
	}
	os.Exit(code)
}

// buildPebble builds the pebble of go.mod's tool line once per test binary.
var buildPebble = sync.OnceValues(func() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if pebbleDir, err = os.MkdirTemp("", "warren-pebble-"); err != nil {
		return "", err
	}
	bin := filepath.Join(pebbleDir, "pebble")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/letsencrypt/pebble/v2/cmd/pebble").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building pebble: %v\n%s", err, out)
	}
	return bin, nil
})

// freePort returns a loopback TCP port that was free a moment ago (for
// pebble's own listeners, which it binds itself).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dnsResponder answers A queries for testName with 127.0.0.1 and every
// other query with no records, over TCP (pebble's VA asks over TCP).
func dnsResponder(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: l, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA && strings.EqualFold(q.Question[0].Name, testName+".") {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A: net.IPv4(127, 0, 0, 1)})
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return l.Addr().String()
}

// startPebble runs pebble validating HTTP-01 on httpPort and TLS-ALPN-01
// on tlsPort of 127.0.0.1, issuing certificates valid for validity.
func startPebble(t *testing.T, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	bin, err := buildPebble()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The CA's own HTTPS certificate, for 127.0.0.1.
	certFile, keyFile := filepath.Join(dir, "wfe.pem"), filepath.Join(dir, "wfe.key")
	wfeCert := writePair(t, certFile, keyFile, "localhost", 7)
	apiPort, mgmtPort := freePort(t), freePort(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", apiPort),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":             certFile, "privateKey": keyFile,
		"httpPort": httpPort, "tlsPort": tlsPort,
		"externalAccountBindingRequired": false,
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(validity / time.Second)}},
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", dnsResponder(t))
	cmd.Dir = dir
	// No random nonce rejections or sleeps in validation; every order
	// validated anew (no reuse of earlier authorizations), so a renewal
	// proves the challenge again.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("pebble's output:\n%s", out)
		}
	})
	trust := x509.NewCertPool()
	trust.AddCert(wfeCert)
	p := &pebble{dir: fmt.Sprintf("https://127.0.0.1:%d/dir", apiPort), apiPort: apiPort, caFile: certFile, out: out,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust, ServerName: "localhost"}}}}
	var root []byte
	wait.For(t, 60*time.Second, "pebble serving its root", func() bool {
		resp, err := p.client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		root, err = io.ReadAll(resp.Body)
		return err == nil && resp.StatusCode == 200
	})
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble's root: %q", root)
	}
	return p
}

// handshake connects to addr asking for testName and returns the chain
// served (nil if the handshake failed), verified against roots.
func handshake(addr string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 90 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: testName, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, nil
}

// acmeListener serves Certs for pebble on a loopback listener of its
// own, counting the TLS-ALPN-01 challenge handshakes.
func acmeListener(t *testing.T, c *Certs, l net.Listener) *atomic.Int64 {
	var alpn atomic.Int64
	tc := c.TLSConfig()
	get := tc.GetCertificate
	tc.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if slices.Contains(h.SupportedProtos, "acme-tls/1") {
			alpn.Add(1)
		}
		return get(h)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
		TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second}
	go hs.ServeTLS(l, "", "")
	t.Cleanup(func() { hs.Close() })
	return &alpn
}

// countingListener counts the connections accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// TestACMETLSALPNObtainAndRenew: the listener obtains a certificate from
// pebble at the first handshake for its name (TLS-ALPN-01 answered on the
// listener itself), serves it, and serves the renewed one without a
// restart when the first nears its end (pebble issues 30-second
// certificates; autocert renews a third of the lifetime before expiry).
func TestACMETLSALPNObtainAndRenew(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := startPebble(t, freePort(t), port(l), 30*time.Second)
	state := t.TempDir()
	log, _ := logtest.New()
	c, err := New(Options{ACMEHosts: []string{testName}, ACMEDirectory: p.dir, StateDir: state,
		ACMEHTTPClient: p.client, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	alpn := acmeListener(t, c, l)
	chain, err := handshake(l.Addr().String(), p.roots)
	if err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	first := chain[0]
	if !slices.Contains(first.DNSNames, testName) || !strings.Contains(first.Issuer.CommonName, "Pebble") {
		t.Fatalf("served %v issued by %q", first.DNSNames, first.Issuer.CommonName)
	}
	if alpn.Load() == 0 {
		t.Error("no TLS-ALPN-01 challenge handshake reached the listener")
	}
	// A client naming no host (the readiness self-probe by IP address)
	// still completes a handshake, with a certificate nobody trusts.
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Errorf("handshake without a server name: %v", err)
	} else {
		if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; !strings.Contains(cn, "no server name") {
			t.Errorf("without a server name: served %q", cn)
		}
		conn.Close()
	}
	if names := c.Names(); len(names) != 1 || names[0] != testName {
		t.Errorf("names %v", names)
	}
	// The account key and the certificate are cached in the state dir.
	cached, _ := filepath.Glob(filepath.Join(state, ACMECacheDir, "*"))
	if !slices.Contains(cached, filepath.Join(state, ACMECacheDir, testName)) {
		t.Errorf("cache holds %v", cached)
	}
	var renewed *x509.Certificate
	wait.For(t, 90*time.Second, "a renewed certificate served", func() bool {
		chain, err := handshake(l.Addr().String(), p.roots)
		if err != nil || chain[0].SerialNumber.Cmp(first.SerialNumber) == 0 {
			return false
		}
		renewed = chain[0]
		return true
	})
	if !renewed.NotAfter.After(first.NotAfter) || !slices.Contains(renewed.DNSNames, testName) {
		t.Errorf("renewed certificate %v valid until %v (first until %v)", renewed.DNSNames, renewed.NotAfter, first.NotAfter)
	}
	t.Logf("first serial %x until %v; renewed %x until %v; %d TLS-ALPN-01 handshakes",
		first.SerialNumber, first.NotAfter, renewed.SerialNumber, renewed.NotAfter, alpn.Load())
}

// TestACMEHTTP01: when TLS-ALPN-01 cannot succeed (pebble validates it on
// a port where nothing listens), the certificate is obtained with
// HTTP-01 answered by HTTPHandler on the port-80 listener, whose other
// requests are redirected to https.
func TestACMEHTTP01(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := startPebble(t, port(hl), freePort(t), time.Hour)
	c, err := New(Options{ACMEHosts: []string{testName}, ACMEDirectory: p.dir, StateDir: t.TempDir(), ACMEHTTPClient: p.client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	counted := &countingListener{Listener: hl}
	go c.ServeHTTP01(ctx, counted)
	acmeListener(t, c, l)
	chain, err := handshake(l.Addr().String(), p.roots)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if !slices.Contains(chain[0].DNSNames, testName) || counted.n.Load() == 0 {
		t.Errorf("served %v after %d connections to the HTTP-01 listener", chain[0].DNSNames, counted.n.Load())
	}
	if !strings.Contains(p.out.String(), "Attempting to validate w/ HTTP: http://"+testName) {
		t.Error("pebble did not validate HTTP-01")
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).
		Get("http://" + hl.Addr().String() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://127.0.0.1:443/x" {
		t.Errorf("plain request: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
