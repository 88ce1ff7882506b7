package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/noise"
)

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "warren: missing command"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"wg"}, 2, "exactly one interface name"},
		{[]string{"wg", "a", "b"}, 2, "exactly one interface name"},
		{[]string{"wg", "a/b"}, 2, "contains '/'"},
		{[]string{"wg", "waytoolonginterfacename"}, 2, "1 to 15 bytes"},
		{[]string{"wg", "--bogus", "wg0"}, 2, "warren wg: unknown flag: --bogus"},
		{[]string{"genkey", "x"}, 2, `warren genkey: unexpected argument "x"`},
		{[]string{"up", "--bogus"}, 2, "warren up: unknown flag: --bogus"},
		{[]string{"up", "--timeout", "soon"}, 2, `warren up: invalid argument "soon" for "--timeout" flag`},
		{[]string{"daemon", "--port", "70000"}, 2, "--port 70000: must be 0..65535"},
		{[]string{"daemon", "--tun", "a/b"}, 2, "--tun"},
		{[]string{"daemon", "--mtu", "100"}, 2, "--mtu 100"},
		{[]string{"daemon", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"status", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"ip", "-4", "-6"}, 2, "exclude each other"},
		{[]string{"ping"}, 2, "exactly one peer"},
		{[]string{"ping", "-c", "0", "b"}, 2, "-c must be at least 1"},
		{[]string{"down", "x"}, 2, `unexpected argument "x"`},
		{[]string{"netcheck", "--what"}, 2, "warren netcheck: unknown flag: --what"},
		{[]string{"status", "--socket", "/nonexistent/warrend.sock"}, 1, "is `warren daemon` running?"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.msg) || strings.Count(strings.TrimSpace(errb.String()), "\n") > 0 && tc.code != 2 {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
		if tc.args != nil && strings.Count(strings.TrimSpace(errb.String()), "\n") > 0 {
			t.Errorf("%v: error is not one line: %q", tc.args, errb.String())
		}
	}
}

func TestKeyCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if run([]string{"genkey"}, &out, &errb) != 0 {
		t.Fatal(errb.String())
	}
	priv := strings.TrimSpace(out.String())
	k, err := noise.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	if pubkeyFrom(strings.NewReader(priv+"\n"), &pub, &errb) != 0 {
		t.Fatal(errb.String())
	}
	if strings.TrimSpace(pub.String()) != k.PublicKey().String() {
		t.Fatal("pubkey mismatch")
	}
	errb.Reset()
	if pubkeyFrom(strings.NewReader("not a key\n"), &pub, &errb) != 1 || !strings.Contains(errb.String(), "invalid private key") {
		t.Fatalf("bad key accepted: %q", errb.String())
	}
}

func TestLogLevel(t *testing.T) {
	for _, ok := range []string{"", "verbose", "debug", "info", "error", "silent", "VERBOSE"} {
		if _, err := parseLogLevel(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	if _, err := parseLogLevel("loud"); err == nil {
		t.Error("accepted loud")
	}
}
