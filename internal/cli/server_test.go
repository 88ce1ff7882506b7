package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// lockedBuffer is a bytes.Buffer safe to write from the server's goroutines
// while the test reads it.
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

// cmd runs a command line in process.
func cmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs a command line that must succeed and returns its stdout.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errb := cmd(t, args...)
	if code != 0 {
		t.Fatalf("%v: exit %d, stderr %q", args, code, errb)
	}
	return out
}

// testServer is `warren server` running in process on a free port.
type testServer struct {
	url, pub, dataDir string
	stderr            *lockedBuffer
	stop              func() int
}

func startServer(t *testing.T, dataDir string, extra ...string) *testServer {
	t.Helper()
	sf := newServerFlags("server", true)
	if err := sf.fs.Parse(append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0"}, extra...)); err != nil {
		t.Fatal(err)
	}
	c, err := sf.resolve()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{dataDir: dataDir, stderr: &lockedBuffer{}}
	done := make(chan int, 1)
	go func() { done <- serve(ctx, c, ts.stderr) }()
	var once sync.Once
	code := -1
	ts.stop = func() int {
		once.Do(func() { cancel(); code = <-done })
		return code
	}
	t.Cleanup(func() { ts.stop() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rec := logRecord(ts.stderr.String(), "listening"); rec != nil {
			ts.url, ts.pub = rec["url"], rec["public_key"]
			return ts
		}
		select {
		case code := <-done:
			t.Fatalf("server exited %d: %s", code, ts.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %s", ts.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerAndAdminEndToEnd(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := filepath.Join(t.TempDir(), "data")

	// Before the first start there is no store and no key: the
	// subcommands create neither.
	if code, _, errb := cmd(t, "server", "apikey", "create", "--data-dir", dir); code != 1 || !strings.Contains(errb, "does not exist") {
		t.Fatalf("apikey create before first start: %d %q", code, errb)
	}
	if code, _, errb := cmd(t, "server", "key", "--data-dir", dir); code != 1 || !strings.Contains(errb, "no server key at") {
		t.Fatalf("server key before first start: %d %q", code, errb)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir created by the subcommands: %v", err)
	}

	ts := startServer(t, dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi, err)
	}
	key := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir, "--expiration", "1h"))
	if !strings.HasPrefix(key, "wapi_") || strings.Contains(key, "\n") {
		t.Fatalf("apikey create printed %q", key)
	}
	fi, err := os.Stat(filepath.Join(dir, serverKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server key file: %v %v", fi, err)
	}
	if got := strings.TrimSpace(ok(t, "server", "key", "--data-dir", dir)); got != ts.pub {
		t.Fatalf("server key %q, startup line says %q", got, ts.pub)
	}
	if !strings.HasPrefix(ts.url, "http://127.0.0.1:") {
		t.Fatalf("url %q", ts.url)
	}

	a := func(args ...string) string {
		t.Helper()
		return ok(t, append([]string{"admin", "--server", ts.url, "--api-key", key}, args...)...)
	}
	if out := a("users", "create", "alice"); !strings.Contains(out, "created user alice") {
		t.Fatalf("users create: %q", out)
	}
	code, _, errb := cmd(t, "admin", "--server", ts.url, "--api-key", key, "users", "create", "alice")
	if code != 1 || errb != "warren admin users create: user \"alice\" already exists\n" {
		t.Fatalf("duplicate user: %d %q", code, errb)
	}
	// Global flags after RESOURCE VERB, and from the environment.
	var users []admin.User
	if err := json.Unmarshal([]byte(ok(t, "admin", "users", "list", "--json", "--server", ts.url, "--api-key", key)), &users); err != nil || len(users) != 1 || users[0].Name != "alice" {
		t.Fatalf("users list --json: %v %+v", err, users)
	}
	t.Setenv(envServer, strings.TrimPrefix(ts.url, "http://"))
	t.Setenv(envAPIKey, key)
	if out := ok(t, "admin", "users", "list"); !strings.HasPrefix(out, "ID  NAME   CREATED\n1   alice  ") {
		t.Fatalf("users list table:\n%s", out)
	}

	authKey := strings.TrimSpace(ok(t, "admin", "authkeys", "create", "--user", "alice", "--reusable", "--expiration", "1h"))
	if !strings.HasPrefix(authKey, "wkey_") || strings.ContainsAny(authKey, " \n") {
		t.Fatalf("authkeys create printed %q", authKey)
	}
	var ak admin.AuthKey
	if err := json.Unmarshal([]byte(ok(t, "admin", "authkeys", "create", "--user=alice", "--ephemeral", "--json")), &ak); err != nil || !strings.HasPrefix(ak.Key, "wkey_") || !ak.Ephemeral {
		t.Fatalf("authkeys create --json: %v %+v", err, ak)
	}
	if out := ok(t, "admin", "authkeys", "list", "--user", "alice"); strings.Count(out, "\n") != 3 || !strings.Contains(out, "PREFIX") || strings.Contains(out, authKey) {
		t.Fatalf("authkeys list:\n%s", out)
	}

	// A real node joins through the control protocol on the same port.
	pub, err := noise.ParsePublicKey(ts.pub)
	if err != nil {
		t.Fatal(err)
	}
	nk, _ := noise.GeneratePrivateKey()
	cl, err := client.New(client.Config{ServerURL: ts.url, ServerKey: pubkey.Server{PublicKey: pub}, NodeKey: nk, Logger: logtest.T(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	self, err := cl.Register(ctx, authKey, "My Laptop", nil)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []admin.Node
	if err := json.Unmarshal([]byte(ok(t, "admin", "nodes", "list", "--json", "--user", "alice")), &nodes); err != nil || len(nodes) != 1 ||
		nodes[0].Name != "my-laptop" || nodes[0].Hostname != "My Laptop" || uint64(nodes[0].ID) != self.ID || len(nodes[0].Addresses) != 2 {
		t.Fatalf("nodes list --json: %v %+v", err, nodes)
	}
	if out := ok(t, "admin", "nodes", "list"); !strings.Contains(out, "my-laptop") || !strings.Contains(out, "LAST SEEN") {
		t.Fatalf("nodes list:\n%s", out)
	}
	if out := ok(t, "admin", "nodes", "rename", "my-laptop", "laptop"); !strings.Contains(out, "renamed node my-laptop to laptop") {
		t.Fatalf("nodes rename: %q", out)
	}
	if code, _, errb := cmd(t, "admin", "nodes", "rename", "laptop", "Not_A_Label"); code != 1 || !strings.Contains(errb, "is not a DNS label") || strings.Count(errb, "\n") != 1 {
		t.Fatalf("bad rename: %d %q", code, errb)
	}
	// Tags need a policy declaring them, and one the node's user owns.
	if code, _, errb := cmd(t, "admin", "nodes", "tag", "laptop", "tag:db"); code != 1 || !strings.Contains(errb, "no policy is set") || strings.Count(errb, "\n") != 1 {
		t.Fatalf("tag without a policy: %d %q", code, errb)
	}
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(pol, []byte(`{"tagOwners": {"tag:db": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ok(t, "admin", "policy", "set", pol)
	if out := ok(t, "admin", "nodes", "tag", "laptop", "tag:db"); !strings.Contains(out, "now has tags tag:db") {
		t.Fatalf("nodes tag: %q", out)
	}
	if out := ok(t, "admin", "nodes", "list"); !strings.Contains(out, "TAGS") || !strings.Contains(out, "tag:db") {
		t.Fatalf("nodes list after tag:\n%s", out)
	}
	if out := ok(t, "admin", "nodes", "expire", "laptop"); !strings.Contains(out, "expired node laptop") {
		t.Fatalf("nodes expire: %q", out)
	}
	if out := ok(t, "admin", "nodes", "list"); !strings.Contains(out, "expired ") {
		t.Fatalf("nodes list after expire:\n%s", out)
	}
	if out := ok(t, "admin", "nodes", "delete", "laptop"); out != "deleted node laptop\n" {
		t.Fatalf("nodes delete: %q", out)
	}
	if code, _, errb := cmd(t, "admin", "nodes", "delete", "laptop"); code != 1 || !strings.Contains(errb, `node "laptop" not found`) {
		t.Fatalf("delete twice: %d %q", code, errb)
	}

	ok(t, "admin", "authkeys", "expire", "1")
	ok(t, "admin", "authkeys", "delete", "1")
	ok(t, "admin", "users", "rename", "alice", "alicia")
	var k2 admin.APIKey
	if err := json.Unmarshal([]byte(ok(t, "admin", "apikeys", "create", "--json", "--expiration", "30d")), &k2); err != nil || !strings.HasPrefix(k2.Key, "wapi_") {
		t.Fatalf("apikeys create: %v %+v", err, k2)
	}
	if out := ok(t, "admin", "apikeys", "list"); strings.Count(out, "\n") != 3 || strings.Contains(out, key) || strings.Contains(out, k2.Key) {
		t.Fatalf("apikeys list:\n%s", out)
	}
	if out := ok(t, "server", "apikey", "list", "--data-dir", dir); strings.Count(out, "\n") != 3 || !strings.Contains(out, k2.Prefix) {
		t.Fatalf("server apikey list:\n%s", out)
	}
	ok(t, "admin", "apikeys", "expire", "2")
	ok(t, "admin", "apikeys", "delete", "2")
	ok(t, "admin", "users", "delete", "alicia")

	// An expired key is refused like a wrong one.
	t.Setenv(envAPIKey, k2.Key)
	if code, _, errb := cmd(t, "admin", "users", "list"); code != 1 || errb != "warren admin users list: invalid or expired API key\n" {
		t.Fatalf("deleted key: %d %q", code, errb)
	}

	if code := ts.stop(); code != 0 {
		t.Fatalf("server exit %d: %s", code, ts.stderr.String())
	}
	if !strings.Contains(ts.stderr.String(), "shutting down") {
		t.Fatalf("no shutdown line: %s", ts.stderr.String())
	}
	// Restart: the same key is loaded, not replaced.
	ts2 := startServer(t, dir)
	if ts2.pub != ts.pub {
		t.Fatalf("key changed across restarts: %s, %s", ts.pub, ts2.pub)
	}
}

func TestServerKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, serverKeyFile)
	k, err := loadServerKey(path, true)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	if k2, err := loadServerKey(path, true); err != nil || k2 != k {
		t.Fatalf("reload: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		os.Chmod(path, mode)
		if _, err := loadServerKey(path, true); err == nil || !strings.Contains(err.Error(), "readable by group or others") {
			t.Fatalf("mode %o: %v", mode, err)
		}
	}
	code, _, errb := cmd(t, "server", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errb, "readable by group or others (mode 0644); run chmod 600") || strings.Count(errb, "\n") != 1 {
		t.Fatalf("server with a readable key: %d %q", code, errb)
	}
	os.WriteFile(path, []byte("garbage\n"), 0o600)
	if _, err := loadServerKey(path, true); err == nil || !strings.Contains(err.Error(), "server key") {
		t.Fatalf("garbage key: %v", err)
	}
}

// TestServerConfigFile: `warren server` and its subcommands read the YAML
// config file (flags win over it), the deprecated JSON file still works
// with a warning, and a bad file is one line naming file, line and key.
func TestServerConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	resolve := func(args ...string) (serverConfig, error) {
		sf := newServerFlags("server", true)
		sf.flags.Environ = func() []string { return nil }
		if err := sf.fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return sf.resolve()
	}
	listen := func(c serverConfig) string { return config.Get(c.cfg, config.ServerListen) }
	cfg := write("server.yaml", "listen: 127.0.0.1:9999\ndata_dir: /from/config\ndomain: corp.example\nephemeral_grace: 5m\nipv4_prefix: 10.9.0.0/16\n")
	c, err := resolve("--config", cfg)
	if err != nil || listen(c) != "127.0.0.1:9999" || c.dataDir() != "/from/config" || c.db() != "sqlite:/from/config/warren.db" ||
		config.Get(c.cfg, config.ServerDomain) != "corp.example" || config.Get(c.cfg, config.ServerEphemeralGrace) != 5*time.Minute ||
		c.storeOptions().IPv4Prefix.String() != "10.9.0.0/16" || len(c.warnings) != 0 {
		t.Fatalf("config only: %v %+v", err, c)
	}
	c, err = resolve("--config", cfg, "--data-dir", "/from/flag", "--listen", ":1")
	if err != nil || listen(c) != ":1" || c.dataDir() != "/from/flag" || c.db() != "sqlite:/from/flag/warren.db" ||
		config.Get(c.cfg, config.ServerDomain) != "corp.example" {
		t.Fatalf("flags over config: %v %+v", err, c)
	}
	// A flag given with its default value still wins over the file.
	c, err = resolve("--listen", ":8080", "--config", cfg)
	if err != nil || listen(c) != ":8080" {
		t.Fatalf("explicit default: %v %+v", err, c)
	}
	// The JSON file of the previous release: same keys, a warning.
	c, err = resolve("--config", write("config.json", `{"allowed_hosts":["vpn.example.com","alias.example.com"],"max_conns_per_ip":7}`))
	if err != nil || strings.Join(config.Get(c.cfg, config.ServerAllowedHosts), ",") != "vpn.example.com,alias.example.com" ||
		config.Get(c.cfg, config.ServerMaxConnsPerIP) != 7 || len(c.warnings) != 1 || !strings.Contains(c.warnings[0], "deprecated") {
		t.Fatalf("JSON file: %v %+v", err, c)
	}
	c, err = resolve()
	if err != nil || listen(c) != ":8080" || c.dataDir() != "/var/lib/warren-server" || c.db() != "sqlite:/var/lib/warren-server/warren.db" {
		t.Fatalf("defaults: %v %+v", err, c)
	}
	for body, msg := range map[string]string{
		"listen: \":1\"\ndata-dir: /x\n": `:2: unknown key "data-dir" (did you mean "data_dir"?)`,
		"domain: [a, b]\n":               `:1: domain: want a single string, not a list`,
		"max_conns_per_ip: -1\n":         `:1: max_conns_per_ip: "-1" is not a whole number >= 0`,
		"ephemeral_grace: 5 minutes\n":   `:1: ephemeral_grace: "5 minutes" is not a duration`,
	} {
		p := write("bad.yaml", body)
		code, _, errb := cmd(t, "server", "--config", p)
		if code != 2 || !strings.HasPrefix(errb, "warren server: ") || !strings.Contains(errb, p+msg) || strings.Count(errb, "\n") != 1 {
			t.Errorf("%q: %d %q", body, code, errb)
		}
	}
	// The subcommands read the same file: the key lands in its data dir.
	data := filepath.Join(dir, "data")
	cfg = write("sub.yaml", "data_dir: "+data+"\nlisten: \":0\"\n")
	if code, _, errb := cmd(t, "server", "apikey", "create", "--config", cfg); code != 1 || !strings.Contains(errb, "data dir "+data+" does not exist") {
		t.Fatalf("apikey create before the store exists: %d %q", code, errb)
	}
	os.Mkdir(data, 0o700)
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(data, "warren.db"), store.Options{}) // as the server's first start
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	ok(t, "server", "apikey", "create", "--config", cfg)
	if _, err := os.Stat(filepath.Join(data, "warren.db")); err != nil {
		t.Fatalf("apikey create ignored the config's data_dir: %v", err)
	}
	if out := ok(t, "server", "apikey", "list", "--json", "--config", cfg); !strings.Contains(out, `"prefix"`) || strings.Contains(out, `"key"`) {
		t.Fatalf("apikey list --json: %s", out)
	}
}

func TestServerAdminUsageErrors(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"server", "--bogus"}, 2, "warren server: unknown flag: --bogus"},
		{[]string{"server", "extra"}, 2, `warren server: unexpected argument "extra"`},
		{[]string{"server", "--tls-cert", "c.pem"}, 2, "tls_cert and tls_key go together"},
		{[]string{"server", "--data-dir", dir, "--ephemeral-grace", "soon"}, 2, `"soon" is not a duration`},
		{[]string{"server", "--data-dir", dir, "--ipv4-prefix", "fd00::/64"}, 2, "is not an IPv4 prefix"},
		{[]string{"server", "--data-dir", dir, "--listen", "256.0.0.1:1"}, 1, `level=ERROR msg="server failed: listen tcp: `},
		{[]string{"server", "--config", filepath.Join(dir, "none.json")}, 2, "no such file"},
		{[]string{"server", "apikey"}, 2, "warren server apikey: missing verb (want create, list)"},
		{[]string{"server", "apikey", "create", "--data-dir", dir, "--expiration", "x"}, 2, `invalid duration "x"`},
		{[]string{"server", "apikey", "create", "--data-dir", dir, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"server", "key", "--data-dir", t.TempDir()}, 1, "no server key at"},
		{[]string{"admin"}, 2, "warren admin: missing resource (want users, authkeys, nodes, apikeys, routes, policy, dns, audit)"},
		{[]string{"admin", "--bogus"}, 2, "warren admin: unknown flag: --bogus"},
		{[]string{"admin", "widgets", "list"}, 2, `warren admin: unknown resource "widgets"`},
		{[]string{"admin", "users"}, 2, "warren admin users: missing verb (want create, list, rename, delete)"},
		{[]string{"admin", "users", "frob"}, 2, `warren admin users: unknown verb "frob"`},
		{[]string{"admin", "users", "create"}, 2, "warren admin users create: want NAME, got 0 argument(s)"},
		{[]string{"admin", "users", "create", "a", "b"}, 2, "want NAME, got 2"},
		{[]string{"admin", "users", "list", "x"}, 2, "want no arguments"},
		{[]string{"admin", "users", "create", ""}, 2, "empty argument"},
		{[]string{"admin", "nodes", "list", "--bogus"}, 2, "warren admin nodes list: unknown flag: --bogus"},
		{[]string{"admin", "users", "list"}, 2, "warren admin users list: no API key"},
		{[]string{"admin", "--api-key", "nope", "users", "list"}, 2, "does not look like an admin API key"},
		{[]string{"admin", "--api-key", "wapi_x", "--server", "ftp://h", "users", "list"}, 2, "is not an http(s) URL"},
		{[]string{"admin", "--api-key", "wapi_x", "--server", "http://h:8080", "users", "list"}, 2, "warren admin users list: --server http://h:8080: plain http to a host that is not loopback would send the key in clear; use https://, or pass --insecure"},
		{[]string{"admin", "--api-key", "wapi_x", "authkeys", "create"}, 2, "warren admin authkeys create: --user is required"},
		{[]string{"admin", "--api-key", "wapi_x", "authkeys", "create", "--user", "a", "--expiration", "1y"}, 2, "--expiration: invalid duration"},
		{[]string{"admin", "--api-key", "wapi_x", "--server", "127.0.0.1:1", "users", "list"}, 1, "warren admin users list: cannot reach the server at http://127.0.0.1:1"},
	} {
		code, out, errb := cmd(t, tc.args...)
		lines := strings.Count(errb, "\n")
		if tc.args[len(tc.args)-1] == "admin" {
			lines = 1 // bare 'warren admin' prints its usage
		}
		if code != tc.code || !strings.Contains(errb, tc.msg) || lines != 1 || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and one line with %q", tc.args, code, out, errb, tc.code, tc.msg)
		}
	}
	// --help anywhere prints usage on stdout and succeeds.
	for _, args := range [][]string{
		{"server", "--help"}, {"server", "apikey", "create", "--help"}, {"server", "apikey", "--help"}, {"server", "key", "-h"},
		{"admin", "--help"}, {"admin", "help"}, {"admin", "users", "--help"}, {"admin", "authkeys", "create", "--help"},
		{"admin", "nodes", "rename", "-h"}, {"admin", "apikeys", "list", "--help"},
	} {
		code, out, errb := cmd(t, args...)
		if code != 0 || !strings.Contains(out, "warren") || errb != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errb)
		}
	}
	if _, out, _ := cmd(t, "admin", "authkeys", "create", "--help"); !strings.Contains(out, "-reusable") || !strings.Contains(out, "-ephemeral") || !strings.Contains(out, "-expiration") {
		t.Errorf("authkeys create --help:\n%s", out)
	}
}

// TestServerSignal runs `warren server` as a process (this test binary,
// re-executed) and checks that SIGTERM shuts it down cleanly.
func TestServerSignal(t *testing.T) {
	if args := os.Getenv("WARREN_CLI_TEST_ARGS"); args != "" {
		var argv []string
		if err := json.Unmarshal([]byte(args), &argv); err != nil {
			panic(err)
		}
		os.Exit(run(argv, os.Stdout, os.Stderr))
	}
	dir := t.TempDir()
	c := exec.Command(os.Args[0], "-test.run=^TestServerSignal$")
	argv, _ := json.Marshal([]string{"server", "--data-dir", dir, "--listen", "127.0.0.1:0"})
	c.Env = append(os.Environ(), "WARREN_CLI_TEST_ARGS="+string(argv))
	stderr, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.HasPrefix(parseLogfmt(sc.Text())["url"], "http://127.0.0.1:") {
		t.Fatalf("startup line: %q %v", sc.Text(), sc.Err())
	}
	if err := c.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v; stderr %s", err, rest.String())
	}
	if !strings.Contains(rest.String(), "shutting down") {
		t.Fatalf("stderr after SIGTERM: %q", rest.String())
	}
}

func TestServerTLS(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)

	ts := startServer(t, filepath.Join(dir, "data"), "--tls-cert", certPath, "--tls-key", keyPath)
	if !strings.HasPrefix(ts.url, "https://127.0.0.1:") {
		t.Fatalf("url %q", ts.url)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(ts.url + "/warren/v1/key")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), ts.pub) {
		t.Fatalf("key over TLS: %d %s", resp.StatusCode, b)
	}
}
