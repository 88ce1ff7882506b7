package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets this test binary act as the warren binary when invoked
// under that name (through a symlink), so that shells can run it.
func TestMain(m *testing.M) {
	if b := filepath.Base(os.Args[0]); b == "warren" || b == "warren-wg" {
		os.Exit(Main(os.Args))
	}
	os.Exit(m.Run())
}

// warrenOnPath puts a `warren` (this test binary, acting as Main) first on
// PATH and returns that PATH.
func warrenOnPath(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, "warren")); err != nil {
		t.Fatal(err)
	}
	return dir + ":" + os.Getenv("PATH")
}

// TestCompleteVerbs: cobra's __complete (what every shell's script calls)
// completes verbs, sub-verbs and flags from the command definitions.
func TestCompleteVerbs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ad"}, "admin"},
		{[]string{"admin", "no"}, "nodes"},
		{[]string{"admin", "nodes", "t"}, "tag"},
		{[]string{"server", "apikey", ""}, "create"},
		{[]string{"help", "st"}, "status"},
		{[]string{"up", "--adv"}, "--advertise-routes"},
		{[]string{"completion", "f"}, "fish"},
		{[]string{"server", "--log-level", ""}, "warn"},
		{[]string{"relay", "--log-format", "j"}, "json"},
		{[]string{"admin", "apikeys", "create", "--scope", ""}, "relay"},
		{[]string{"file", "get", "--conflict", ""}, "rename"},
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"__complete"}, tc.args...), &out, &errb); code != 0 {
			t.Fatalf("__complete %q: exit %d, %s", tc.args, code, errb.String())
		}
		found := false
		for line := range strings.SplitSeq(out.String(), "\n") {
			name, _, _ := strings.Cut(line, "\t")
			found = found || name == tc.want
		}
		if !found {
			t.Errorf("__complete %q: no %q in\n%s", tc.args, tc.want, out.String())
		}
	}
}

// bashCompletion is bash-completion's library, which the generated script
// uses as interactive shells have it (scripts/install-deps.sh installs it).
const bashCompletion = "/usr/share/bash-completion/bash_completion"

// TestBashCompletion: `warren completion bash` loads in bash without an
// error, and its function completes `warren ad<TAB>` to admin and
// `warren admin nodes <TAB>` to the node verbs by calling the binary.
func TestBashCompletion(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("no bash")
	}
	path := warrenOnPath(t)
	load := exec.Command("bash", "--norc", "--noprofile", "-c", "set -e; source <(warren completion bash); declare -F __start_warren")
	load.Env = append(os.Environ(), "PATH="+path)
	if out, err := load.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "__start_warren" {
		t.Fatalf("loading the bash completion: %v, %q", err, out)
	}
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("%v (scripts/install-deps.sh installs bash-completion)", err)
	}
	complete := func(line string) string {
		t.Helper()
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		script := `set -e
source ` + bashCompletion + `
source <(warren completion bash)
COMP_WORDS=(` + strings.Join(quoteAll(words), " ") + `)
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE="` + line + `"
COMP_POINT=${#COMP_LINE}
compopt() { :; } # the builtin works only while bash itself completes
__start_warren
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+path)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil || errb.Len() != 0 {
			t.Fatalf("bash completing %q: %v, stderr %q", line, err, errb.String())
		}
		return out.String()
	}
	if got := strings.Fields(complete("warren ad")); len(got) != 1 || got[0] != "admin" {
		t.Errorf("warren ad<TAB>: %q", got)
	}
	got := complete("warren admin nodes ")
	for _, v := range []string{"list", "delete", "expire", "tag", "rename"} {
		if !strings.Contains(got, v) {
			t.Errorf("warren admin nodes <TAB>: no %s in %q", v, got)
		}
	}
}

func quoteAll(ws []string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = "'" + w + "'"
	}
	return out
}

// TestCompletionScripts: the zsh and fish scripts are generated (the
// shells are not on every machine; bash runs them above), and the binary
// reached through its warren-wg name still acts as `warren wg`.
func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_warren", "zsh": "#compdef warren", "fish": "complete -c warren"} {
		var out, errb bytes.Buffer
		if code := run([]string{"completion", shell}, &out, &errb); code != 0 || !strings.Contains(out.String(), want) || errb.Len() != 0 {
			t.Errorf("completion %s: exit %d, stderr %q, no %q", shell, code, errb.String(), want)
		}
	}
}

// TestWarrenWGName: invoked as warren-wg the binary is `warren wg` (as
// wg-quick calls it), with wg's own argument check.
func TestWarrenWGName(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Symlink(self, filepath.Join(dir, "warren"))
	os.Symlink(filepath.Join(dir, "warren"), filepath.Join(dir, "warren-wg"))
	for _, tc := range []struct {
		argv0 string
		args  []string
		msg   string
	}{
		{"warren-wg", []string{"a/b"}, "warren wg: "},
		{"warren-wg", nil, "warren wg: exactly one interface name expected"},
		{"warren-wg", []string{"--help"}, ""},
		{"warren", []string{"wg", "--help"}, ""},
	} {
		cmd := exec.Command(filepath.Join(dir, tc.argv0), tc.args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if tc.msg == "" {
			if err != nil || !strings.Contains(out.String(), "warren wg [flags] IFNAME") {
				t.Errorf("%s %q: %v, stdout %q, stderr %q", tc.argv0, tc.args, err, out.String(), errb.String())
			}
			continue
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.HasPrefix(errb.String(), tc.msg) {
			t.Errorf("%s %q: %v, stderr %q; want exit 2 and %q", tc.argv0, tc.args, err, errb.String(), tc.msg)
		}
	}
}
