package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// headscaleURL is where headscale serves control and its embedded DERP
// (HTTPS with the lab's own certificate, which tailscaled trusts through
// SSL_CERT_FILE: DERP always runs over TLS, as users run it).
const headscaleURL = "https://" + meshServer + ":8443"

// headscaleConfig is headscale's configuration in the lab: the embedded
// DERP as the only relay region, nothing fetched from the internet.
const headscaleConfig = `server_url: ` + headscaleURL + `
listen_addr: ` + meshServer + `:8443
metrics_listen_addr: 127.0.0.1:9090
grpc_listen_addr: 127.0.0.1:50443
grpc_allow_insecure: false
tls_cert_path: {{DIR}}/cert.pem
tls_key_path: {{DIR}}/key.pem
noise:
  private_key_path: {{DIR}}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: "headscale"
    region_name: "Headscale Embedded DERP"
    verify_clients: true
    stun_listen_addr: "` + meshServer + `:3478"
    private_key_path: {{DIR}}/derp_server_private.key
    automatically_add_embedded_derp_region: true
    ipv4: ` + meshServer + `
  urls: []
  paths: []
  auto_update_enabled: false
  update_frequency: 24h
disable_check_updates: true
database:
  type: sqlite
  sqlite:
    path: {{DIR}}/db.sqlite
    write_ahead_log: true
log:
  level: warn
  format: text
policy:
  mode: file
  path: ""
dns:
  magic_dns: false
  base_domain: bench.example
  override_local_dns: false
  nameservers:
    global: []
unix_socket: {{DIR}}/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
`

// startDERP runs Tailscale in the relay lab: headscale in S with its
// embedded DERP server, and tailscaled in A and in B logged in to it.
func (l *lab) startDERP(ctx context.Context, headscale, tailscaled, tailscale string) (m *meshSetup, err error) {
	m = &meshSetup{name: "derp"}
	defer func() {
		if err != nil {
			l.stopMesh(m)
		}
	}()
	dir := filepath.Join(l.tmp, "derp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return m, err
	}
	m.cleanup = append(m.cleanup, func() { os.RemoveAll(dir) })
	if err := writeLabCert(dir); err != nil {
		return m, err
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(headscaleConfig, "{{DIR}}", dir)), 0o600); err != nil {
		return m, err
	}
	hs, err := l.startMeshProc(m, l.nsS, "headscale", nil, headscale, "serve", "-c", cfg)
	if err != nil {
		return m, err
	}
	if err := waitTCP(ctx, l.nsS, meshServer+":8443", "headscale listening", hs); err != nil {
		return m, err
	}
	m.relay = hs
	hsCLI := func(args ...string) (string, error) {
		return inNSOutput(ctx, l.nsS, append([]string{headscale, "-c", cfg}, args...)...)
	}
	var user struct {
		ID json.Number `json:"id"`
	}
	out, err := hsCLI("users", "create", "bench", "-o", "json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &user)
	}
	if err != nil {
		return m, fmt.Errorf("headscale users create: %v: %s", err, out)
	}
	authKey, err := hsCLI("preauthkeys", "create", "--user", user.ID.String(), "--reusable", "-e", "2h")
	if err != nil {
		return m, err
	}
	env := []string{"SSL_CERT_FILE=" + filepath.Join(dir, "cert.pem"), "TS_NO_LOGS_NO_SUPPORT=true"}
	var socks [2]string
	for i, ns := range []string{l.nsA, l.nsB} {
		host := []string{"a", "b"}[i]
		socks[i] = filepath.Join(dir, host+".sock")
		tun := fmt.Sprintf("tsb%s%d", host, os.Getpid()%100000)
		state := filepath.Join(dir, host)
		p, err := l.startMeshProc(m, ns, "tailscaled "+host, env, tailscaled, "--state="+filepath.Join(state, "tailscaled.state"),
			"--statedir="+state, "--socket="+socks[i], "--tun="+tun, "--port=41641", "--no-logs-no-support")
		if err != nil {
			return m, err
		}
		m.cleanup = append(m.cleanup, func() {
			_ = inNS(context.Background(), ns, []string{tailscaled, "--cleanup", "--socket=" + socks[i], "--tun=" + tun}).Run()
		})
		if err := waitFor(ctx, 15*time.Second, "tailscaled socket "+host, func() bool {
			c, err := net.Dial("unix", socks[i])
			if err == nil {
				c.Close()
			}
			return err == nil || p.exited()
		}); err != nil || p.exited() {
			return m, fmt.Errorf("tailscaled %s: %v\n%s", host, err, p.out.String())
		}
		if _, err := inNSOutput(ctx, ns, tailscale, "--socket="+socks[i], "up", "--login-server="+headscaleURL, "--authkey="+authKey,
			"--hostname="+host, "--accept-dns=false", "--netfilter-mode=off", "--timeout=60s"); err != nil {
			return m, fmt.Errorf("%v\ntailscaled %s:\n%s", err, host, p.out.String())
		}
		if i == 0 {
			m.nodeA = p
		} else {
			m.nodeB = p
		}
	}
	if m.targetB, err = inNSOutput(ctx, l.nsB, tailscale, "--socket="+socks[1], "ip", "-4"); err != nil {
		return m, err
	}
	if err := waitFor(ctx, 30*time.Second, "A pinging B through Tailscale", func() bool {
		return l.inA(ctx, "ping", "-c", "1", "-W", "1", m.targetB).Run() == nil
	}); err != nil {
		return m, err
	}
	// The path as Tailscale reports it: `tailscale ping` says "via DERP(...)".
	var last string
	err = waitFor(ctx, 20*time.Second, "tailscale ping saying A reaches B via DERP", func() bool {
		// It exits 1 ("direct connection not established") when every
		// pong came over DERP: read its output either way.
		b, err := inNS(ctx, l.nsA, []string{tailscale, "--socket=" + socks[0], "ping", "-c", "1", "--timeout=3s", m.targetB}).CombinedOutput()
		out := string(b)
		last = fmt.Sprint(out, err)
		if i := strings.Index(out, "via "); i >= 0 {
			m.path, _, _ = strings.Cut(out[i+len("via "):], " ")
		}
		return strings.HasPrefix(m.path, "DERP(")
	})
	if err != nil {
		err = fmt.Errorf("%w; last tailscale ping: %s", err, last)
	}
	return m, err
}

// writeLabCert writes a self-signed certificate for meshServer (cert.pem,
// its own CA) and its key (key.pem) into dir.
func writeLabCert(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: meshServer},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(meshServer)}, DNSNames: []string{"headscale.bench.example"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
