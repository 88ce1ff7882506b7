package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestHelpDefects is the regression test of the help defects a new user
// hit (issue #21), through run() alone so that it runs on the hand-written
// command line of before too, where it failed: node verbs printed --help
// on stderr, `daemon --help` printed its usage twice, a flag whose
// description quoted a command in backquotes showed that command as its
// argument name, `genkey --help` was an error, and `warren help status`
// printed the list of commands instead of status's help.
func TestHelpDefects(t *testing.T) {
	t.Setenv(envSocket, "")
	for _, verb := range []string{"status", "daemon", "up", "down", "logout", "ip", "ping", "netcheck", "metrics",
		"file cp", "file get", "file list", "debug capture", "debug bundle", "wg", "version", "genkey", "pubkey",
		"server", "server key", "relay", "relay key", "admin", "admin users create"} {
		args := append(strings.Fields(verb), "--help")
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		if code != 0 || errb.Len() != 0 || out.Len() == 0 {
			t.Errorf("warren %s --help: exit %d, %d bytes on stdout, stderr %q", verb, code, out.Len(), errb.String())
		}
		if n := strings.Count(strings.ToLower(out.String()), "usage:"); n != 1 {
			t.Errorf("warren %s --help: usage printed %d times:\n%s", verb, n, out.String())
		}
	}
	var out, errb bytes.Buffer
	run([]string{"daemon", "--help"}, &out, &errb)
	if strings.Contains(out.String()+errb.String(), "resolv-conf up") {
		t.Errorf("daemon --help names --resolv-conf's argument after a quoted command:\n%s", out.String()+errb.String())
	}
	var status, help bytes.Buffer
	run([]string{"status", "--help"}, &status, &errb)
	if code := run([]string{"help", "status"}, &help, &errb); code != 0 || help.String() != status.String() || help.Len() == 0 {
		t.Errorf("warren help status: exit %d, not status's help:\n%s", code, help.String())
	}
}
