package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// The running `warren server` (the real binary: this test binary as
// warren) with its settings from a YAML file, the environment and flags,
// a deprecated JSON file, and SIGHUP.

// freeAddr is a loopback TCP address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// warrenProc is the warren binary running.
type warrenProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{} // closed when it has exited (cmd.ProcessState set)
}

// startWarren runs the warren binary with args and the extra environment
// (WARREN_* variables of the test's own environment removed); it is
// killed at the end of the test.
func startWarren(t *testing.T, env []string, args ...string) *warrenProc {
	t.Helper()
	bin := filepath.Join(strings.SplitN(warrenOnPath(t), ":", 2)[0], "warren")
	p := &warrenProc{cmd: exec.Command(bin, args...), stderr: &lockedBuffer{}, exited: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARREN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

func (p *warrenProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and checks a clean exit.
func (p *warrenProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	wait.Until(t, "the process exits", func() bool { return !p.running() })
	if !p.cmd.ProcessState.Success() {
		t.Fatalf("exit %v:\n%s", p.cmd.ProcessState, p.stderr.String())
	}
}

func writeFile(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServerConfigPrecedence: the running server takes each setting from
// the highest layer that gives it: flag > WARREN_* variable > YAML file >
// default. The file gives listen, public_url, domain, ephemeral_grace and
// relay; the environment overrides listen, public_url and
// ephemeral_grace; a flag overrides ephemeral_grace again.
func TestServerConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	fileAddr, envAddr := freeAddr(t), freeAddr(t)
	cfg := writeFile(t, filepath.Join(dir, "server.yaml"), `
# the file layer
listen: "`+fileAddr+`"
public_url: http://file.example:1
domain: file.example
ephemeral_grace: 5m
relay: true
`)
	data := filepath.Join(dir, "data")
	p := startWarren(t, []string{"WARREN_LISTEN=" + envAddr, "WARREN_PUBLIC_URL=http://env.example:2", "WARREN_EPHEMERAL_GRACE=7m"},
		"server", "--config", cfg, "--data-dir", data, "--ephemeral-grace", "9m")
	stderr := p.stderr
	var listening, relayRec map[string]string
	wait.Until(t, "the server logs where it listens", func() bool {
		listening, relayRec = logRecord(stderr.String(), "listening"), logRecord(stderr.String(), "relay")
		return listening != nil && relayRec != nil
	})
	if listening["url"] != "http://"+envAddr || listening["config"] != cfg {
		t.Errorf("listen: env over file: %v", listening)
	}
	if listening["ephemeral_grace"] != "9m0s" {
		t.Errorf("ephemeral_grace: flag over env over file: %v", listening)
	}
	if relayRec["public_url"] != "http://env.example:2" {
		t.Errorf("public_url: env over file: %v", relayRec)
	}
	if code, body := get(t, "http://"+envAddr+"/healthz", ""); code != 200 {
		t.Fatalf("healthz on the environment's address: %d %q", code, body)
	}
	if l, err := net.Listen("tcp", fileAddr); err != nil {
		t.Errorf("the file's listen address is in use: %v", err)
	} else {
		l.Close()
	}
	// The domain the server uses comes from the file (nothing overrides it).
	key := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", data))
	code, _, errb := cmd(t, "admin", "--server", "http://"+envAddr, "--api-key", key, "dns", "records", "add", "stray.example.org", "A", "198.18.0.9")
	if code != 1 || !strings.Contains(errb, "outside the MagicDNS domain file.example") {
		t.Errorf("domain from the file: %d %q", code, errb)
	}
	if strings.Contains(stderr.String(), "deprecated") {
		t.Errorf("warning for a YAML file: %s", stderr.String())
	}
	p.stop(t)
}

// TestServerJSONConfigDeprecated: the JSON config file of the previous
// release (the packaged example) still starts the server, with one
// deprecation warning.
func TestServerJSONConfigDeprecated(t *testing.T) {
	dir := t.TempDir()
	example, err := os.ReadFile("../../packaging/etc/server.json.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, filepath.Join(dir, "server.json"), strings.Replace(string(example), `"ephemeral_grace": ""`, `"ephemeral_grace": "3m"`, 1))
	addr := freeAddr(t)
	p := startWarren(t, nil, "server", "--config", cfg, "--data-dir", filepath.Join(dir, "data"), "--listen", addr)
	stderr := p.stderr
	var rec map[string]string
	wait.Until(t, "the server started", func() bool { rec = logRecord(stderr.String(), "listening"); return rec != nil })
	if code, _ := get(t, "http://"+addr+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("healthz: %d\n%s", code, stderr.String())
	}
	if rec == nil || rec["ephemeral_grace"] != "3m0s" {
		t.Errorf("the JSON file's ephemeral_grace not used: %v", rec)
	}
	if n := strings.Count(stderr.String(), "JSON config files are deprecated"); n != 1 || !strings.Contains(stderr.String(), "level=WARN") {
		t.Errorf("want one deprecation warning, got %d:\n%s", n, stderr.String())
	}
	p.stop(t)
}

// writeCert writes a self-signed certificate for name (and 127.0.0.1)
// with the given serial to certFile and keyFile (replacing them the way
// certbot's deploy hooks do: write a new file, rename it over the old).
func writeCert(t *testing.T, certFile, keyFile, name string, serial int64) *x509.Certificate {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	for path, blk := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: kder}} {
		writeFile(t, path+".new", string(pem.EncodeToMemory(blk)))
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// servedSerial is the serial number of the certificate addr serves to a
// client asking for name.
func servedSerial(t *testing.T, addr, name string) int64 {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// tlsGet fetches https://addr/healthz with Host host, trusting roots.
func tlsGet(t *testing.T, addr, host string, roots ...*x509.Certificate) int {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/healthz", nil)
	req.Host = host
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestServerSIGHUP: SIGHUP on a running server serving certificate files
// swaps the certificate a TLS client sees (and the Host check follows the
// new certificate's names), applies a changed log_level, reports a
// changed key that needs a restart, and keeps the process running; a
// certificate that does not load keeps the old one.
func TestServerSIGHUP(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certA := writeCert(t, certFile, keyFile, "a.example", 1001)
	addr := freeAddr(t)
	cfgBody := "listen: \"" + addr + "\"\ntls_cert: " + certFile + "\ntls_key: " + keyFile + "\n"
	cfg := writeFile(t, filepath.Join(dir, "server.yaml"), cfgBody+"log_level: warn\n")
	p := startWarren(t, nil, "server", "--config", cfg, "--data-dir", filepath.Join(dir, "data"))
	stderr := p.stderr
	wait.Until(t, "the server answers over TLS", func() bool {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	if s := servedSerial(t, addr, "a.example"); s != 1001 {
		t.Fatalf("serial %d before SIGHUP", s)
	}
	if code := tlsGet(t, addr, "a.example", certA); code != 200 {
		t.Fatalf("Host a.example: %d", code)
	}
	if code := tlsGet(t, addr, "b.example", certA); code == 200 {
		t.Fatal("Host b.example served before its certificate")
	}
	if strings.Contains(stderr.String(), "level=INFO") {
		t.Fatalf("info records at log_level warn:\n%s", stderr.String())
	}

	// A new certificate, log_level info, and a changed key that needs a
	// restart (domain).
	certB := writeCert(t, certFile, keyFile, "b.example", 2002)
	writeFile(t, cfg, cfgBody+"log_level: info\ndomain: other.example\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	wait.Until(t, "the new certificate served", func() bool { return servedSerial(t, addr, "b.example") == 2002 })
	// Logged at info: there only because the level changed.
	wait.Until(t, "the reload logged at info", func() bool { return logRecord(stderr.String(), "tls: certificate reloaded") != nil })
	if rec := logRecord(stderr.String(), "tls: certificate reloaded"); rec["serial"] != "7d2" { // 2002
		t.Errorf("reload record: %v", rec)
	}
	if rec := logRecord(stderr.String(), "config: reloaded; some changes need a restart"); rec == nil ||
		rec["applied"] != "[log_level]" || rec["restart_needed"] != "[domain]" {
		t.Errorf("config reload record: %v\n%s", rec, stderr.String())
	}
	if code := tlsGet(t, addr, "b.example", certB); code != 200 {
		t.Errorf("Host b.example after the reload: %d", code)
	}

	// A broken certificate file: the old certificate stays.
	writeFile(t, certFile, "not a certificate\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	wait.Until(t, "the failed reload logged", func() bool {
		return logRecord(stderr.String(), "tls: reload failed, still serving the previous certificate") != nil
	})
	if s := servedSerial(t, addr, "b.example"); s != 2002 {
		t.Errorf("serial %d after a failed reload", s)
	}
	if !p.running() {
		t.Fatalf("the server exited on SIGHUP: %s", stderr.String())
	}
	p.stop(t)
}

// TestRelayConfigFileAndSIGHUP: `warren relay` (the real binary) as the
// unit runs it: the server URL and relay key from WARREN_SERVER and
// WARREN_RELAY_KEY (relay.env), everything else from its YAML file; a
// SIGHUP re-reads the file and the relay keeps serving.
func TestRelayConfigFileAndSIGHUP(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := t.TempDir()
	ts := startServer(t, filepath.Join(dir, "server"))
	relayKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--scope", "relay", "--data-dir", filepath.Join(dir, "server")))
	addr := freeAddr(t)
	body := "listen: \"" + addr + "\"\nstun_listen: \"\"\ndata_dir: " + filepath.Join(dir, "relay") + "\npoll: 200ms\n"
	cfg := writeFile(t, filepath.Join(dir, "relay.yaml"), body)
	p := startWarren(t, []string{"WARREN_SERVER=" + ts.url, "WARREN_RELAY_KEY=" + relayKey}, "relay", "--config", cfg)
	var rec map[string]string
	wait.Until(t, "the relay started", func() bool { rec = logRecord(p.stderr.String(), "listening"); return rec != nil || !p.running() })
	if rec == nil || rec["url"] != "http://"+addr || rec["config"] != cfg {
		t.Fatalf("relay: %v\n%s", rec, p.stderr.String())
	}
	if code, body := get(t, "http://"+addr+readyPath, ""); code != http.StatusOK {
		t.Fatalf("readyz: %d %q", code, body)
	}
	writeFile(t, cfg, body+"log_level: warn\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	wait.Until(t, "the reload logged", func() bool {
		r := logRecord(p.stderr.String(), "config: reloaded")
		return r != nil && r["applied"] == "[log_level]"
	})
	if code, _ := get(t, "http://"+addr+readyPath, ""); code != http.StatusOK || !p.running() {
		t.Fatalf("after SIGHUP: %d running=%v\n%s", code, p.running(), p.stderr.String())
	}
	p.stop(t)
}

// TestServerRelayFlagsKept: every flag `warren server`, `warren relay`
// and their key subcommands had before their settings moved to package
// config is still there.
func TestServerRelayFlagsKept(t *testing.T) {
	root := newRoot(&streams{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}})
	for path, flags := range map[string][]string{
		"server": {"config", "data-dir", "db", "ipv4-prefix", "ipv6-prefix", "listen", "domain", "ephemeral-grace", "tls-cert", "tls-key",
			"relay", "stun-listen", "public-url", "metrics-listen", "allowed-hosts", "max-conns-per-ip", "relay-map", "log-level", "log-format"},
		"server key":           {"config", "data-dir", "db", "ipv4-prefix", "ipv6-prefix"},
		"server apikey create": {"config", "data-dir", "db", "ipv4-prefix", "ipv6-prefix", "expiration", "scope"},
		"server apikey list":   {"config", "data-dir", "db", "ipv4-prefix", "ipv6-prefix", "json"},
		"relay key":            {"data-dir"},
		"server configtest":    {"config", "print"},
		"relay configtest":     {"config", "print"},
		"relay": {"listen", "stun-listen", "data-dir", "tls-cert", "tls-key", "server", "relay-key", "api-key", "insecure", "poll",
			"rate", "burst", "queue", "allowed-hosts", "max-conns-per-ip", "metrics-listen", "log-level", "log-format"},
	} {
		c, _, err := root.Find(strings.Fields(path))
		if err != nil || c.CommandPath() != "warren "+path {
			t.Fatalf("%s: %v", path, err)
		}
		for _, f := range flags {
			if c.Flags().Lookup(f) == nil {
				t.Errorf("warren %s lost --%s", path, f)
			}
		}
	}
}
