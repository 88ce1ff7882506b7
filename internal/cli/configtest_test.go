package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigtest: `warren server configtest` passes a good file (and the
// shipped examples), fails a bad one with one line naming file, line and
// key, and passes the old JSON format with a deprecation warning.
func TestConfigtest(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "listen: \":8443\"\nipv4_prefix: 100.90.0.0/16\nallowed_hosts: [warren.example.com]\n")
	out := ok(t, "server", "configtest", "--config", good, "--print")
	if !strings.Contains(out, good+": configuration OK") || !strings.Contains(out, `ipv4_prefix: "100.90.0.0/16" # `+good+":2") {
		t.Errorf("stdout %q", out)
	}
	for _, ex := range []string{"server", "relay"} {
		ok(t, ex, "configtest", "--config", "../../packaging/etc/"+ex+".yaml.example")
	}
	for _, tc := range []struct{ body, want string }{
		{"listen: \":1\"\nlisten_addr: x\n", `bad.yaml:2: unknown key "listen_addr"`},
		{"ipv6_prefix: fd00::/129\n", `bad.yaml:1: ipv6_prefix: "fd00::/129" is not an IPv6 prefix`},
		{"ephemeral_grace: 2 minutes\n", `bad.yaml:1: ephemeral_grace: "2 minutes" is not a duration`},
	} {
		code, stdout, stderr := cmd(t, "server", "configtest", "--config", write("bad.yaml", tc.body))
		if code != 1 || stdout != "" || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want one line with %q", tc.body, code, stdout, stderr, tc.want)
		}
	}
	code, _, stderr := cmd(t, "relay", "configtest", "--config", write("relay.yaml", "relay_key: wapi_x\n"))
	if code != 1 || !strings.Contains(stderr, "relay.yaml:1: relay_key: does not look like a relay key") || strings.Contains(stderr, "wapi_x") {
		t.Errorf("relay: exit %d, stderr %q", code, stderr)
	}
	code, out, stderr = cmd(t, "server", "configtest", "--config", "../../packaging/etc/server.json.example")
	if code != 0 || !strings.Contains(out, "configuration OK") || !strings.Contains(stderr, "warning: config ../../packaging/etc/server.json.example: JSON config files are deprecated") {
		t.Errorf("json: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// The certificate files named must load.
	code, _, stderr = cmd(t, "server", "configtest", "--config", write("tls.yaml", "tls_cert: "+filepath.Join(dir, "nocert.pem")+"\ntls_key: "+filepath.Join(dir, "nokey.pem")+"\n"))
	if code != 1 || !strings.Contains(stderr, "tls.yaml:1: tls: "+filepath.Join(dir, "nocert.pem")) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("missing certificate: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := cmd(t, "server", "configtest", "--config", filepath.Join(dir, "missing.yaml")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
}
