package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/httpguard"
)

// load runs `warren server` flag parsing and Load with file contents (""
// for no file), an environment and command-line arguments.
func newFS() *pflag.FlagSet { return pflag.NewFlagSet("test", pflag.ContinueOnError) }

func load(t *testing.T, sc *Schema, file string, env []string, args ...string) (*Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	f := sc.Bind(fs)
	f.Environ = func() []string { return env }
	if file != "" {
		p := filepath.Join(t.TempDir(), sc.Command+".yaml")
		if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", p}, args...)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return f.Load(func(string) {})
}

// TestPrecedence is the table of flag > environment > file > default, for
// a key of each kind.
func TestPrecedence(t *testing.T) {
	type kv struct{ file, env, flag string } // "" = not given on that layer
	kinds := []struct {
		key                       string
		def, file, env, flag, got any // got: parsed values of the layers below
	}{
		{"listen", ":8080", ":1001", ":1002", ":1003", nil},
		{"relay", false, true, false, true, nil},
		{"max_conns_per_ip", int64(httpguard.DefaultPerSource), int64(1), int64(2), int64(3), nil},
		{"ephemeral_grace", 2 * time.Minute, time.Hour, 48 * time.Hour, 90 * time.Second, nil},
		{"ipv4_prefix", netip.Prefix{}, netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("10.3.0.0/16"), nil},
		{"public_url", "", "https://a.example", "https://b.example", "https://c.example:8443", nil},
		{"allowed_hosts", []string{}, []string{"a.example", "b.example"}, []string{"c.example"}, []string{"d.example", "e.example"}, nil},
		{"log_level", "info", "debug", "warn", "error", nil},
	}
	text := map[string][3]string{ // how each layer writes the value: file, env, flag
		"listen":           {`":1001"`, ":1002", ":1003"},
		"relay":            {"true", "false", "true"},
		"max_conns_per_ip": {"1", "2", "3"},
		"ephemeral_grace":  {"1h", "2d", "90s"},
		"ipv4_prefix":      {"10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"},
		"public_url":       {"https://a.example", "https://b.example", "https://c.example:8443"},
		"allowed_hosts":    {"[a.example, b.example]", "c.example", "d.example,e.example"},
		"log_level":        {"debug", "WARN", "error"},
	}
	for _, k := range kinds {
		s := Server.byName[k.key]
		if s == nil {
			t.Fatalf("no key %s", k.key)
		}
		tx := text[k.key]
		for _, layers := range []struct {
			file, env, flag bool
			want            any
			from            string
		}{
			{false, false, false, k.def, "default"},
			{true, false, false, k.file, "server.yaml:2"},
			{false, true, false, k.env, "$" + s.EnvName()},
			{true, true, false, k.env, "$" + s.EnvName()},
			{true, false, true, k.flag, "--" + s.FlagName()},
			{false, true, true, k.flag, "--" + s.FlagName()},
			{true, true, true, k.flag, "--" + s.FlagName()},
		} {
			name := fmt.Sprintf("%s/file=%v,env=%v,flag=%v", k.key, layers.file, layers.env, layers.flag)
			t.Run(name, func(t *testing.T) {
				file, env, args := "", []string{"WARREN_REQUIRE_NETNS=1", "WARREN_SERVER=https://not-a-server-key.example"}, []string(nil)
				if layers.file {
					file = "# a comment\n" + k.key + ": " + tx[0] + "\n"
				}
				if layers.env {
					env = append(env, s.EnvName()+"="+tx[1])
				}
				if layers.flag {
					args = []string{"--" + s.FlagName() + "=" + tx[2]}
				}
				c, err := load(t, Server, file, env, args...)
				if err != nil {
					t.Fatal(err)
				}
				got := c.vals[k.key]
				if !reflect.DeepEqual(got, layers.want) {
					t.Errorf("%s = %#v, want %#v", k.key, got, layers.want)
				}
				if from := c.From(k.key); !strings.HasSuffix(from, layers.from) {
					t.Errorf("%s from %q, want %q", k.key, from, layers.from)
				}
				// The other keys stay at their defaults.
				if Get(c, ServerDataDir) != "/var/lib/warren-server" || (k.key != "listen" && Get(c, ServerListen) != ":8080") {
					t.Errorf("other keys changed: data_dir %q listen %q", Get(c, ServerDataDir), Get(c, ServerListen))
				}
			})
		}
	}
}

// TestBoolFlagWithoutValue: --relay alone means true, and a flag set to
// its default still wins over the file.
func TestBoolFlagWithoutValue(t *testing.T) {
	c, err := load(t, Server, "relay: false\nlisten: \":9\"\n", nil, "--relay", "--listen", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	if !Get(c, ServerRelay) || Get(c, ServerListen) != ":8080" || c.From("listen") != "--listen" {
		t.Errorf("relay %v listen %q from %s", Get(c, ServerRelay), Get(c, ServerListen), c.From("listen"))
	}
}

// TestRelayEnvNames: the relay's credentials keep the variables they had.
func TestRelayEnvNames(t *testing.T) {
	c, err := load(t, Relay, "", []string{"WARREN_SERVER=https://warren.example", "WARREN_RELAY_KEY=wrly_abc"})
	if err != nil {
		t.Fatal(err)
	}
	if Get(c, RelayServer) != "https://warren.example" || Get(c, RelayRelayKey) != "wrly_abc" {
		t.Errorf("server %q relay key %q", Get(c, RelayServer), Get(c, RelayRelayKey))
	}
	if RelayAPIKey.Env() != "WARREN_API_KEY" || RelayRelayKey.Flag() != "relay-key" {
		t.Errorf("names: %s %s", RelayAPIKey.Env(), RelayRelayKey.Flag())
	}
}

// TestBadValuesFromEachLayer: each names where the value came from, on one
// line, and a secret's value is not repeated.
func TestBadValuesFromEachLayer(t *testing.T) {
	for _, tc := range []struct {
		name string
		sc   *Schema
		file string
		env  []string
		args []string
		want string
	}{
		{"env prefix", Server, "", []string{"WARREN_IPV6_PREFIX=10.0.0.0/8"}, nil, `$WARREN_IPV6_PREFIX: ipv6_prefix: "10.0.0.0/8" is not an IPv6 prefix`},
		{"env duration", Server, "", []string{"WARREN_EPHEMERAL_GRACE=soon"}, nil, `$WARREN_EPHEMERAL_GRACE: ephemeral_grace: "soon" is not a duration`},
		{"flag url", Server, "", nil, []string{"--public-url", "ftp://x"}, `invalid argument "ftp://x" for "--public-url" flag: "ftp://x" is not an http(s)://HOST[:PORT] URL`},
		{"flag secret", Relay, "", nil, []string{"--relay-key", "wapi_SECRET"}, `--relay-key: does not look like a relay key (wrly_...)`},
		{"tls pair", Server, "tls_cert: /etc/c.pem\n", nil, nil, "config: tls_cert and tls_key go together"},
		{"acme and files", Server, "tls_cert: /c\ntls_key: /k\ntls_acme: [a.example]\n", nil, nil, "config: tls_cert and tls_acme: give one"},
		{"empty data dir", Relay, "data_dir: \"\"\n", nil, nil, "config: data_dir is empty"},
		{"oidc without public url", Server, "oidc_issuer: https://idp.example\n", nil, nil, "config: oidc_issuer needs public_url"},
		{"oidc without secret", Server, "oidc_issuer: https://idp.example\npublic_url: https://w.example\noidc_client_id: w\n", nil, nil, "config: oidc_issuer needs oidc_client_secret_file"},
		{"oidc without allow list", Server, "oidc_issuer: https://idp.example\npublic_url: https://w.example\noidc_client_id: w\noidc_client_secret_file: /s\n", nil, nil, "nobody could sign in"},
		{"oidc list", Server, "", []string{"WARREN_OIDC_ALLOWED_USERS=a@example.com,\"b\""}, nil, `"\"b\"" is not a plain word`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.sc, tc.file, tc.env, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q repeats the secret", err)
			}
		})
	}
}

// TestReloadDiff: Changed sorts changed keys into reloadable and not.
func TestReloadDiff(t *testing.T) {
	a, err := load(t, Server, "log_level: info\nlisten: \":1\"\ntls_cert: /a\ntls_key: /b\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := load(t, Server, "log_level: debug\nlisten: \":2\"\ntls_cert: /a\ntls_key: /c\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	reload, restart := b.Changed(a)
	if !reflect.DeepEqual(reload, []string{"tls_key", "log_level"}) || !reflect.DeepEqual(restart, []string{"listen"}) {
		t.Errorf("reload %v restart %v", reload, restart)
	}
}

// TestDeclarations: every key has help, and names derive one way.
func TestDeclarations(t *testing.T) {
	for _, sc := range []*Schema{Server, Relay} {
		for _, k := range sc.Keys() {
			if k.Help == "" || k.Flag != strings.ReplaceAll(k.Name, "_", "-") || k.Env != "WARREN_"+strings.ToUpper(k.Name) {
				t.Errorf("%s %s: %+v", sc.Command, k.Name, k)
			}
		}
	}
}

// TestReloadKeepsUnreloadable: a SIGHUP applies only reloadable keys, and
// a bad file keeps the running config.
func TestReloadKeepsUnreloadable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "server.yaml")
	write := func(s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_level: info\nlisten: \":1\"\n")
	fs := newFS()
	f := Server.Bind(fs)
	f.Environ = func() []string { return nil }
	if err := fs.Parse([]string{"--config", p}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	write("log_level: debug\nlisten: \":2\"\n")
	c = f.Reload(c, log)
	if Get(c, ServerTLS.Cert) != "" || Get(c, ServerLog.Level) != "debug" || Get(c, ServerListen) != ":1" {
		t.Errorf("after reload: level %q listen %q", Get(c, ServerLog.Level), Get(c, ServerListen))
	}
	if !strings.Contains(logs.String(), "restart_needed=[listen]") || !strings.Contains(logs.String(), "applied=[log_level]") {
		t.Errorf("log %q", logs.String())
	}
	logs.Reset()
	write("log_level: loud\n")
	if c2 := f.Reload(c, log); c2 != c {
		t.Error("a bad file replaced the config")
	}
	if !strings.Contains(logs.String(), `server.yaml:1: log_level: \"loud\" is not one of`) || strings.Count(logs.String(), "\n") != 1 {
		t.Errorf("log %q", logs.String())
	}
}

// TestRelayAdminKeyFromEnvIgnored: the admin commands' WARREN_API_KEY in
// the environment does not clash with a relay key, as before; given on
// the same layer as the relay key, the two are an error.
func TestRelayAdminKeyFromEnvIgnored(t *testing.T) {
	c, err := load(t, Relay, "", []string{"WARREN_API_KEY=wapi_admin", "WARREN_RELAY_KEY=wrly_relay"})
	if err != nil {
		t.Fatal(err)
	}
	if Get(c, RelayAPIKey) != "" || Get(c, RelayRelayKey) != "wrly_relay" {
		t.Errorf("api key %q relay key %q", Get(c, RelayAPIKey), Get(c, RelayRelayKey))
	}
	if _, err := load(t, Relay, "", nil, "--api-key", "wapi_a", "--relay-key", "wrly_b"); err == nil || !strings.Contains(err.Error(), "give one") {
		t.Errorf("both as flags: %v", err)
	}
}

// TestBindSome: a subcommand binds a few keys as flags; the file is still
// read whole (and checked), and the other keys are no flags.
func TestBindSome(t *testing.T) {
	p := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(p, []byte("data_dir: /srv/warren\nlisten: \":1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := newFS()
	f := Server.Bind(fs, "data_dir", "db")
	f.Environ = func() []string { return nil }
	if fs.Lookup("listen") != nil || fs.Lookup("data-dir") == nil {
		t.Fatal("wrong flags bound")
	}
	if err := fs.Parse([]string{"--config", p, "--db", "sqlite:/x.db"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if Get(c, ServerDataDir) != "/srv/warren" || Get(c, ServerDB) != "sqlite:/x.db" || Get(c, ServerListen) != ":1" {
		t.Errorf("data_dir %q db %q listen %q", Get(c, ServerDataDir), Get(c, ServerDB), Get(c, ServerListen))
	}
	if err := fs.Parse([]string{"--listen", ":2"}); err == nil {
		t.Error("--listen accepted")
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "1500": 1500, "64K": 64 << 10, "50M": 50 << 20,
		"50MiB": 50 << 20, "2m": 2 << 20, "1G": 1 << 30, "3GB": 3 << 30} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "5X", "M", "1.5M", "10KM", "99999999999G"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d; want an error", in, got)
		}
	}
}
