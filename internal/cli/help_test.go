package cli

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/help")

// helpPaths lists every command a user can name: the root and each verb
// and sub-verb that is not hidden (completion's included).
func helpPaths(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	walk(newRoot(&streams{nil, &bytes.Buffer{}, &bytes.Buffer{}}), func(c *cobra.Command) {
		if c.Hidden || c.Name() == "__complete" || c.Name() == "__completeNoDesc" {
			return
		}
		for p := c; p.HasParent(); p = p.Parent() {
			if p.Hidden {
				return
			}
		}
		out = append(out, strings.Fields(c.CommandPath())[1:])
	})
	if len(out) < 60 {
		t.Fatalf("only %d commands found", len(out))
	}
	return out
}

// TestHelpGolden: `warren --help` and every verb's --help print the help
// on stdout, nothing on stderr, exit 0, and the text is the golden file's
// (regenerate with go test ./internal/cli -update). `warren help VERB`
// prints the same text, and -h and the single-dash -help do too.
func TestHelpGolden(t *testing.T) {
	t.Setenv(envSocket, "") // the --socket default shows in the help
	seen := map[string]bool{}
	for _, path := range helpPaths(t) {
		name := strings.Join(append([]string{"warren"}, path...), "_") + ".golden"
		seen[name] = true
		var out, errb bytes.Buffer
		code := run(append(append([]string{}, path...), "--help"), &out, &errb)
		if code != 0 || errb.Len() != 0 || out.Len() == 0 {
			t.Errorf("warren %s --help: exit %d, stderr %q, stdout %d bytes", strings.Join(path, " "), code, errb.String(), out.Len())
			continue
		}
		golden := filepath.Join("testdata", "help", name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		} else if want, err := os.ReadFile(golden); err != nil || !bytes.Equal(want, out.Bytes()) {
			t.Errorf("warren %s --help differs from %s (go test ./internal/cli -update rewrites it):\n%s", strings.Join(path, " "), golden, out.String())
		}
		for _, args := range [][]string{
			append([]string{"help"}, path...),
			append(append([]string{}, path...), "-h"),
			append(append([]string{}, path...), "-help"),
		} {
			var o2, e2 bytes.Buffer
			if code := run(args, &o2, &e2); code != 0 || e2.Len() != 0 || o2.String() != out.String() {
				t.Errorf("warren %s: exit %d, stderr %q, stdout differs from --help: %v", strings.Join(args, " "), code, e2.String(), o2.String() != out.String())
			}
		}
	}
	// No stale golden files.
	files, _ := filepath.Glob(filepath.Join("testdata", "help", "*.golden"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			if *update {
				os.Remove(f)
			} else {
				t.Errorf("%s: no such command any more (go test ./internal/cli -update removes it)", f)
			}
		}
	}
}

// TestHelpNamesArguments: every verb's usage line names its positional
// arguments, with the same names its errors use, and every flag that takes
// a value names it (no bare "string" from pflag).
func TestHelpNamesArguments(t *testing.T) {
	want := map[string]string{
		"wg": "IFNAME", "ping": "PEER", "ip": "[PEER]", "file cp": "FILE... PEER:", "file get": "DIR",
		"debug capture": "[PEER]", "admin users create": "NAME", "admin users rename": "OLD NEW",
		"admin nodes tag": "ID|NAME TAG[,TAG...]", "admin dns records add": "NAME TYPE VALUE",
		"admin routes approve": "NODE CIDR...", "admin policy set": "FILE", "help": "[VERB...]",
	}
	t.Setenv(envSocket, "")
	for _, path := range helpPaths(t) {
		var out, errb bytes.Buffer
		run(append(append([]string{}, path...), "--help"), &out, &errb)
		if w, ok := want[strings.Join(path, " ")]; ok && !strings.Contains(out.String(), "warren "+strings.Join(path, " ")+" [flags] "+w+"\n") &&
			!strings.Contains(out.String(), "warren "+strings.Join(path, " ")+" "+w) {
			t.Errorf("warren %s --help does not name %s:\n%s", strings.Join(path, " "), w, out.String())
		}
		for line := range strings.SplitSeq(out.String(), "\n") {
			if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[0], "-") && (f[1] == "string" || f[2] == "string") {
				t.Errorf("warren %s: flag without an argument name: %q", strings.Join(path, " "), line)
			}
		}
	}
}

// TestNormalizeArgs: long flags with one dash (as Go's flag package took
// them) get their second dash when they name a flag of the command named
// so far; one-letter flags with two dashes lose one; values, positional
// arguments and everything after "--" are left alone.
func TestNormalizeArgs(t *testing.T) {
	root := newRoot(&streams{nil, &bytes.Buffer{}, &bytes.Buffer{}})
	for _, tc := range []struct{ in, want string }{
		{"status -json", "status --json"},
		{"status -socket /s -json", "status --socket /s --json"},
		{"status -socket=/s", "status --socket=/s"},
		{"up -server http://h:8080 -auth-key k -hostname a", "up --server http://h:8080 --auth-key k --hostname a"},
		{"up -timeout 5s", "up --timeout 5s"},
		{"up --exit-node -json", "up --exit-node -json"}, // a value is kept as given
		{"admin -server U -api-key K -json users list", "admin --server U --api-key K --json users list"},
		{"admin users list -json -server U", "admin users list --json --server U"},
		{"admin -json nodes tag n tag:a", "admin --json nodes tag n tag:a"},
		{"admin authkeys create -user alice -reusable", "admin authkeys create --user alice --reusable"},
		{"admin policy set -", "admin policy set -"},
		{"admin dns records add -ttl 60 a A 1.2.3.4", "admin dns records add --ttl 60 a A 1.2.3.4"},
		{"server -data-dir /d -listen :1 -relay", "server --data-dir /d --listen :1 --relay"},
		{"server apikey create -scope relay -data-dir /d", "server apikey create --scope relay --data-dir /d"},
		{"server apikeys list -json", "server apikeys list --json"},
		{"relay -server U -relay-key K -stun-listen ''", "relay --server U --relay-key K --stun-listen ''"},
		{"daemon -state-dir /s -verbose -log-level debug", "daemon --state-dir /s --verbose --log-level debug"},
		{"wg -f wg0", "wg -f wg0"},
		{"wg --f wg0", "wg -f wg0"},
		{"wg -foreground wg0", "wg --foreground wg0"},
		{"ping --c 3 a", "ping -c 3 a"},
		{"ping -c 3 -count 2 a", "ping -c 3 --count 2 a"},
		{"ping -c3 a", "ping -c3 a"},
		{"ip --4 a", "ip -4 a"},
		{"debug capture -c -1", "debug capture -c -1"},
		{"debug capture --o f -outer", "debug capture -o f --outer"},
		{"debug bundle -o f -json", "debug bundle -o f --json"},
		{"version -json", "version --json"},
		{"file cp -name x a b:", "file cp --name x a b:"},
		{"file ls -json", "file ls --json"},
		{"-help", "--help"},
		{"up -help", "up --help"},
		{"status -bogus", "status -bogus"}, // not a flag: left for pflag to refuse
		{"status -- -json", "status -- -json"},
		{"ping -json -- -c", "ping --json -- -c"},
	} {
		in := strings.Fields(tc.in)
		for i := range in {
			if in[i] == "''" {
				in[i] = ""
			}
		}
		want := strings.Fields(tc.want)
		for i := range want {
			if want[i] == "''" {
				want[i] = ""
			}
		}
		if got := normalizeArgs(root, in); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q, want %q", tc.in, got, want)
		}
	}
}

// TestSingleDashFlagsRun: command lines in the old single-dash style still
// reach the verb with their flags parsed (the error is the verb's own, a
// runtime one, not a usage error).
func TestSingleDashFlagsRun(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"status", "-socket", "/nonexistent/warrend.sock", "-json"}, 1, "warren status: "},
		{[]string{"ping", "-socket", "/nonexistent/warrend.sock", "-c", "1", "peer"}, 1, "warren ping: "},
		{[]string{"ping", "peer", "-socket=/nonexistent/warrend.sock", "--c", "1"}, 1, "warren ping: "},
		{[]string{"admin", "-server", "127.0.0.1:1", "-api-key", "wapi_x", "-json", "users", "list"}, 1, "warren admin users list: cannot reach the server at http://127.0.0.1:1"},
		{[]string{"admin", "users", "list", "-server", "127.0.0.1:1", "-api-key", "wapi_x"}, 1, "cannot reach the server at http://127.0.0.1:1"},
		{[]string{"server", "key", "-data-dir", t.TempDir()}, 1, "warren server key: no server key at"},
		{[]string{"relay", "key", "-data-dir", t.TempDir()}, 1, "warren relay key: no relay key at"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.msg) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"version", "-json"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "{") {
		t.Errorf("version -json: exit %d, %q %q", code, out.String(), errb.String())
	}
}

// TestBadInputOneLine: an unknown verb, an unknown flag, a missing or
// extra argument: one line on stderr naming the problem, nothing on
// stdout, exit 2.
func TestBadInputOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"frobnicate"}, `warren: unknown command "frobnicate" (see 'warren help')`},
		{[]string{"--bogus"}, "warren: unknown flag: --bogus"},
		{[]string{"help", "frobnicate"}, `warren help: no verb "frobnicate"`},
		{[]string{"help", "admin", "widgets"}, `warren help: no verb "admin widgets"`},
		{[]string{"status", "--bogus"}, "warren status: unknown flag: --bogus (see 'warren status --help')"},
		{[]string{"status", "-x"}, "warren status: unknown shorthand flag: 'x' in -x"},
		{[]string{"status", "--json=maybe"}, `warren status: invalid argument "maybe" for "--json" flag`},
		{[]string{"up", "--server"}, "warren up: flag needs an argument: --server"},
		{[]string{"ping"}, "warren ping: exactly one peer expected"},
		{[]string{"ping", "a", "b"}, "warren ping: exactly one peer expected"},
		{[]string{"ip", "a", "b"}, `warren ip: unexpected argument "b"`},
		{[]string{"wg"}, "warren wg: exactly one interface name expected"},
		{[]string{"file"}, "warren file: missing verb (want cp, get, list)"},
		{[]string{"file", "cp", "a"}, "warren file cp: want FILE... PEER:"},
		{[]string{"file", "get"}, "warren file get: want exactly one directory"},
		{[]string{"admin", "nodes", "tag", "n"}, "warren admin nodes tag: want ID|NAME TAG[,TAG...], got 1 argument(s)"},
		{[]string{"admin", "dns"}, "warren admin dns: missing verb (want records, zones, routes)"},
		{[]string{"admin", "dns", "records", "add", "a", "A"}, "warren admin dns records add: want NAME TYPE VALUE, got 2"},
		{[]string{"server", "apikey", "frob"}, `warren server apikey: unknown verb "frob" (want create, list)`},
		{[]string{"relay", "key", "x"}, `warren relay key: unexpected argument "x"`},
		{[]string{"completion", "tcsh"}, "warren completion: "},
		{[]string{"man"}, "warren man: want exactly one directory"},
		{[]string{"server", "--log-level", "loud"}, `warren server: invalid argument "loud" for "--log-level" flag: "loud" is not one of debug, info, warn, error`},
		{[]string{"server", "--log-format", "xml"}, `warren server: invalid argument "xml" for "--log-format" flag: "xml" is not one of text, json`},
		{[]string{"relay", "--server", "http://127.0.0.1:1", "--relay-key", "wrly_x", "--log-level", "loud"}, `warren relay: invalid argument "loud" for "--log-level" flag`},
		{[]string{"daemon", "--log-format", "xml"}, `warren daemon: --log-format "xml"`},
		{[]string{"wg", "--log-level", "loud", "wg0"}, `warren wg: --log-level "loud"`},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != 2 || out.Len() != 0 || !strings.HasPrefix(errb.String(), tc.msg) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and one line starting %q", tc.args, code, out.String(), errb.String(), tc.msg)
		}
	}
}
