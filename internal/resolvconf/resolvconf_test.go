package resolvconf

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/nettest"
)

const original = "# the host's own\nnameserver 198.18.9.53\nnameserver fd00::53%eth0\nsearch lan\noptions ndots:2\n"

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestSetRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	os.WriteFile(path, []byte(original), 0o644)
	// A hard link stands in for a bind mount: it must see the change.
	view := filepath.Join(dir, "view")
	if err := os.Link(path, view); err != nil {
		t.Fatal(err)
	}
	m := New(path, path+".bak")
	if ups, err := m.Upstreams(); err != nil || !slices.Equal(ups, addrs("198.18.9.53", "fd00::53")) {
		t.Fatalf("upstreams before: %v %v", ups, err)
	}
	if err := m.Set(addrs("100.100.100.100", "fd7a::53"), []string{"warren.internal"}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(view)
	for _, want := range []string{"nameserver 100.100.100.100\n", "nameserver fd7a::53\n", "search warren.internal\n", marker} {
		if !strings.Contains(string(got), want) {
			t.Errorf("written file lacks %q:\n%s", want, got)
		}
	}
	// Upstreams still come from the original; a second Set keeps it.
	if err := m.Set(addrs("100.100.100.100"), nil); err != nil {
		t.Fatal(err)
	}
	if ups, err := m.Upstreams(); err != nil || !slices.Equal(ups, addrs("198.18.9.53", "fd00::53")) {
		t.Fatalf("upstreams while set: %v %v", ups, err)
	}
	// A new manager (a restarted daemon) restores what a crashed one left.
	if err := New(path, path+".bak").Restore(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(view); string(got) != original {
		t.Fatalf("restored:\n%s", got)
	}
	if _, err := os.Stat(path + ".bak"); !os.IsNotExist(err) {
		t.Fatalf("backup left behind: %v", err)
	}
	if err := m.Restore(); err != nil {
		t.Fatalf("second restore: %v", err)
	}
}

func TestRestoreLeavesOthersAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte(original), 0o644)
	m := New(path, path+".bak")
	if err := m.Set(addrs("100.100.100.100"), nil); err != nil {
		t.Fatal(err)
	}
	// Someone else (DHCP, an admin) replaced the file meanwhile: keep theirs.
	os.WriteFile(path, []byte("nameserver 198.18.7.7\n"), 0o644)
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "nameserver 198.18.7.7\n" {
		t.Fatalf("clobbered someone else's file:\n%s", got)
	}
}

func TestMissingBackupRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte(marker+"x\nnameserver 100.100.100.100\n"), 0o644)
	if err := New(path, path+".bak").Set(addrs("100.100.100.100"), nil); err == nil || !strings.Contains(err.Error(), "backup") {
		t.Fatalf("Set over our own file without backup: %v", err)
	}
	if err := New(path, path+".bak").Set(nil, nil); err == nil {
		t.Fatal("no nameservers accepted")
	}
}

func FuzzParseNameservers(f *testing.F) {
	f.Add([]byte(original))
	f.Add([]byte("nameserver\nnameserver x\nnameserver 1.2.3.4 extra\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range ParseNameservers(b) {
			if !a.IsValid() || a.Zone() != "" {
				t.Fatalf("bad address %v", a)
			}
		}
	})
}

func TestSharedWithHost(t *testing.T) {
	if SharedWithHost(DefaultPath) {
		t.Fatalf("the initial namespace's own file reported as shared (namespace name %q)", netnsName())
	}
	nettest.NeedNetns(t)
	ns := nettest.NewNS(t, "rcsh")
	var inNS, custom bool
	var name string
	if err := ns.Do(func() error {
		name = netnsName()
		inNS = SharedWithHost(DefaultPath)
		custom = SharedWithHost(filepath.Join(t.TempDir(), "resolv.conf"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Only the network namespace changed (no bind mount): the file is the
	// host's.
	if !inNS || custom {
		t.Fatalf("in namespace %s (found as %q): default path shared=%v (want true), explicit path shared=%v (want false)", ns.Name, name, inNS, custom)
	}
}
