package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func TestNodeKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := ensureStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %o", fi.Mode().Perm())
	}
	k1, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, keyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v mode %o", err, fi.Mode().Perm())
	}
	k2, err := loadOrCreateKey(dir)
	if err != nil || k2 != k1 {
		t.Fatalf("reloaded key differs (%v)", err)
	}
	// A key file others can read is refused.
	os.Chmod(path, 0o644)
	if _, err := loadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v", err)
	}
	// Garbage is refused, not replaced.
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("not a key\n"), 0o600)
	if _, err := loadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "not a valid private key") {
		t.Fatalf("garbage key: %v", err)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("leftover %s", e.Name())
		}
	}
}

func TestPrefsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p, err := loadPrefs(dir)
	if err != nil || !reflect.DeepEqual(p, prefs{}) {
		t.Fatalf("missing prefs: %+v %v", p, err)
	}
	want := prefs{ServerURL: "http://198.18.0.1:8080", ServerKey: "k", Hostname: "h", Registered: true, WantRunning: true,
		AdvertiseRoutes: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}, AcceptRoutes: true, ExitNode: "auto", ExitNodeAllowLAN: true}
	if err := savePrefs(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, err := loadPrefs(dir); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v %v", got, err)
	}
	os.WriteFile(filepath.Join(dir, prefsFile), []byte("{"), 0o600)
	if _, err := loadPrefs(dir); err == nil {
		t.Fatal("torn prefs accepted")
	}
}

func TestResolvePeerAndEndpoint(t *testing.T) {
	pfx := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	k, _ := noise.GeneratePrivateKey()
	nm := &netmap.NetworkMap{Domain: "warren.internal", Peers: []netmap.Node{
		{ID: 2, Name: "bravo", Key: pubkey.Node{PublicKey: k.PublicKey()}, Addresses: []netip.Prefix{pfx("fd00::2/128"), pfx("100.64.0.2/32")}},
	}}
	for q, want := range map[string]string{
		"bravo": "100.64.0.2", "BRAVO.warren.internal.": "100.64.0.2", "fd00::2": "fd00::2",
		"100.64.0.2": "100.64.0.2", k.PublicKey().String(): "100.64.0.2",
	} {
		p, ip, err := resolvePeer(nm, q)
		if err != nil || p.ID != 2 || ip.String() != want {
			t.Errorf("resolve %q: %v %v %v", q, p, ip, err)
		}
	}
	for _, q := range []string{"", "charlie", "100.64.0.3", "bravo.other"} {
		if _, _, err := resolvePeer(nm, q); err == nil {
			t.Errorf("resolve %q succeeded", q)
		}
	}
	if ep := pickEndpoint(nil); ep.IsValid() {
		t.Fatal("endpoint from nothing")
	}
	eps := []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("198.18.0.1:2")}
	if ep := pickEndpoint(eps); ep != eps[1] {
		t.Fatalf("picked %v, want the IPv4 one", ep)
	}
	if ep := pickEndpoint(eps[:1]); ep != eps[0] {
		t.Fatalf("picked %v", ep)
	}
}
