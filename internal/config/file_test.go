package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckBadFiles: configtest's errors are one line naming the file,
// the line and the key.
func TestCheckBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key", "listen: \":8080\"\n\nlisten_adress: x\n", `server.yaml:3: unknown key "listen_adress"`},
		{"flag spelling", "data-dir: /srv\n", `server.yaml:1: unknown key "data-dir" (did you mean "data_dir"?)`},
		{"bad prefix", "# addresses\nipv4_prefix: 10.0.0.0/33\n", `server.yaml:2: ipv4_prefix: "10.0.0.0/33" is not an IPv4 prefix`},
		{"host bits", "ipv4_prefix: 10.0.0.1/8\n", `server.yaml:1: ipv4_prefix: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{"v4 as v6", "ipv6_prefix: 100.64.0.0/10\n", `server.yaml:1: ipv6_prefix: "100.64.0.0/10" is not an IPv6 prefix`},
		{"bad duration", "listen: \":1\"\nephemeral_grace: 5 minutes\n", `server.yaml:2: ephemeral_grace: "5 minutes" is not a duration`},
		{"short duration", "ephemeral_grace: 10ms\n", `server.yaml:1: ephemeral_grace: duration "10ms" is below the minimum 1s`},
		{"bad url", "public_url: warren.example.com\n", `server.yaml:1: public_url: "warren.example.com" is not an http(s)://HOST[:PORT] URL`},
		{"bad bool", "relay: yes please\n", `server.yaml:1: relay: "yes please" is not true or false`},
		{"negative int", "max_conns_per_ip: -1\n", `server.yaml:1: max_conns_per_ip: "-1" is not a whole number >= 0`},
		{"bad dsn", "db: mysql://x\n", `server.yaml:1: db: want "sqlite:PATH" or "postgres://..."`},
		{"list for string", "listen:\n  - a\n  - b\n", `server.yaml:2: listen: want a single string, not a list`},
		{"duplicate", "domain: a.example\ndomain: b.example\n", `server.yaml:2: key "domain" given twice (first on line 1)`},
		{"not a mapping", "- listen\n", `server.yaml:1: want a mapping of keys to values`},
		{"syntax", "listen: \":1\"\n  bad indent: x\n", `server.yaml:1: did not find expected key`},
		{"bad listen", "listen: 8080\n", `server.yaml:1: listen: "8080" is not a HOST:PORT address`},
		{"bad port", "stun_listen: \":70000\"\n", `server.yaml:1: stun_listen: ":70000" is not a HOST:PORT address`},
		{"bad metrics", "metrics_listen: a b\n", `server.yaml:1: metrics_listen: "a b" is not a PORT or HOST:PORT address`},
		{"bad level", "log_level: verbose\n", `server.yaml:1: log_level: "verbose" is not one of debug, info, warn, error`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Server.Check(writeFile(t, "server.yaml", tc.body), nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line with %q", err, tc.want)
			}
		})
	}
}

// TestCheckGoodFile reads a file of many kinds of values.
func TestCheckGoodFile(t *testing.T) {
	c, err := Server.Check(writeFile(t, "server.yaml", `
listen: ":443"
public_url: https://warren.example.com
allowed_hosts:
  - warren.example.com
  - vpn.example.com
db: postgres://warren@db.internal/warren
ipv4_prefix: 100.100.0.0/16
ephemeral_grace: 1d
relay: true
stun_listen: ":3478"
max_conns_per_ip: 0
tls_acme: [warren.example.com]
tls_acme_http_listen: ":80"
log_level: DEBUG
empty:
`[1:]+"\n"), nil)
	if err == nil || !strings.Contains(err.Error(), `server.yaml:15: unknown key "empty"`) {
		t.Fatalf("want the unknown key reported, got %v", err)
	}
	p := writeFile(t, "server.yaml", "listen: \":443\"\nallowed_hosts: [a.example, b.example]\nrelay: true\nstun_listen: \":3478\"\ndomain:\ntls_acme: w.example\nmetrics_listen: 9101\n")
	c, err = Server.Check(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := Get(c, ServerAllowedHosts); strings.Join(got, " ") != "a.example b.example" || !Get(c, ServerRelay) ||
		Get(c, ServerSTUNListen) != ":3478" || Get(c, ServerDomain) != "" || Get(c, ServerTLS.ACME)[0] != "w.example" {
		t.Errorf("read %v", c.vals)
	}
	if c.From("relay") != p+":3" || c.From("domain") != "default" || c.File != p {
		t.Errorf("from relay %q domain %q file %q", c.From("relay"), c.From("domain"), c.File)
	}
}

// TestJSONStillLoads: the JSON format of the previous release (the keys
// of packaging/etc/server.json.example, "" for defaults, lists or strings)
// loads with one deprecation warning however often it is loaded.
func TestJSONStillLoads(t *testing.T) {
	example, err := os.ReadFile("../../packaging/etc/server.json.example")
	if err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, "server.json", strings.Replace(string(example), `"allowed_hosts": []`, `"allowed_hosts": "a.example, b.example"`, 1))
	var warnings []string
	warn := func(s string) { warnings = append(warnings, s) }
	c, err := load(t, Server, "", nil, "--config", p)
	if err != nil {
		t.Fatal(err)
	}
	f := Server.Bind(newFS())
	f.Environ = func() []string { return nil }
	*f.config = p
	for range 2 {
		if c, err = f.Load(warn); err != nil {
			t.Fatal(err)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "server.json: JSON config files are deprecated") {
		t.Errorf("warnings %q", warnings)
	}
	if Get(c, ServerListen) != ":8080" || Get(c, ServerDB) != "" || Get(c, ServerEphemeralGrace).String() != "2m0s" ||
		strings.Join(Get(c, ServerAllowedHosts), ",") != "a.example,b.example" {
		t.Errorf("read %v", c.vals)
	}
	if _, err := Server.Check(writeFile(t, "server.json", `{"listen": ":1", "lisen": ":2"}`), nil); err == nil ||
		!strings.Contains(err.Error(), `server.json:1: unknown key "lisen"`) {
		t.Errorf("unknown JSON key: %v", err)
	}
	if _, err := Server.Check(writeFile(t, "server.json", "{\n  \"max_conns_per_ip\": \"many\"\n}"), nil); err == nil ||
		!strings.Contains(err.Error(), `server.json:2: max_conns_per_ip: "many" is not a whole number`) {
		t.Errorf("bad JSON value: %v", err)
	}
}

// TestExamplesDocumentEveryKey: the example files show every key with its
// default, and uncommented they are a valid config.
func TestExamplesDocumentEveryKey(t *testing.T) {
	line := regexp.MustCompile(`(?m)^#([a-z0-9_]+): (.*)$`)
	for _, sc := range []*Schema{Server, Relay} {
		path := "../../packaging/etc/" + sc.Command + ".yaml.example"
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Check(path, nil); err != nil {
			t.Errorf("%s as shipped: %v", path, err)
		}
		shown := map[string]string{}
		for _, m := range line.FindAllStringSubmatch(string(b), -1) {
			shown[m[1]] = m[2]
		}
		for _, k := range sc.Keys() {
			if _, ok := shown[k.Name]; !ok {
				t.Errorf("%s does not show key %s", path, k.Name)
			}
		}
		c, err := sc.Check(writeFile(t, sc.Command+".yaml", line.ReplaceAllString(string(b), "$1: $2")), nil)
		if err != nil {
			t.Fatalf("%s uncommented: %v", path, err)
		}
		for _, k := range sc.Keys() {
			if got := c.from[k.Name]; got == "default" {
				t.Errorf("%s: %s not read", path, k.Name)
			}
			if got := sc.byName[k.Name].kind.format(c.vals[k.Name]); got != k.Default {
				t.Errorf("%s shows %s: %s, the default is %q", path, k.Name, got, k.Default)
			}
		}
	}
}

// TestConfigDocListsEveryKey: docs/CONFIG.md has a row for every key,
// with its default.
func TestConfigDocListsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, sc := range []*Schema{Server, Relay} {
		sec := doc[strings.Index(doc, "### "+sc.Command):]
		for _, k := range sc.Keys() {
			d := k.Default
			if d == "" {
				d = `""`
			}
			row := fmt.Sprintf("| `%s` | `--%s` | `%s` |", k.Name, k.Flag, k.Env)
			if i := strings.Index(sec, row); i < 0 || !strings.Contains(strings.SplitN(sec[i:], "\n", 2)[0], "`"+d+"`") {
				t.Errorf("docs/CONFIG.md (%s) has no row %s with default %s", sc.Command, row, d)
			}
		}
	}
}
