package uapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// Interoperability with wireguard-tools' wg(8), which finds userspace
// interfaces only through sockets in /var/run/wireguard. The tests skip
// without wg or root, unless WARREN_REQUIRE_NETNS=1 makes that a failure.

func requireWG(t *testing.T) {
	t.Helper()
	must := os.Getenv("WARREN_REQUIRE_NETNS") == "1"
	why := ""
	if _, err := exec.LookPath("wg"); err != nil {
		why = "wg(8) not installed"
	} else if os.Geteuid() != 0 {
		why = "not root: cannot create sockets in /var/run/wireguard"
	}
	if why == "" {
		return
	}
	if must {
		t.Fatal(why + " (WARREN_REQUIRE_NETNS=1)")
	}
	t.Skip(why)
}

// startWG serves a testDevice on the real socket of a fresh interface name.
func startWG(t *testing.T) (*testDevice, string) {
	t.Helper()
	requireWG(t)
	name := fmt.Sprintf("wrnu%04x", rand.IntN(1<<16))
	l, err := Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	dev := newTestDevice()
	done := make(chan error, 1)
	go func() { done <- Serve(l, dev, logtest.T(t)) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(SocketPath(name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket %s left behind: %v", SocketPath(name), err)
		}
	})
	return dev, name
}

// wg runs wg(8) and returns its standard output; stderr goes into err.
func wg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wg", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("wg %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func mustWG(t *testing.T, args ...string) string {
	t.Helper()
	out, err := wg(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func genKey(t *testing.T) noise.PrivateKey {
	t.Helper()
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dump runs "wg show NAME dump" and splits it into tab-separated fields.
func dump(t *testing.T, name string) [][]string {
	t.Helper()
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(mustWG(t, "show", name, "dump"), "\n"), "\n") {
		rows = append(rows, strings.Split(line, "\t"))
	}
	return rows
}

func expectApplied(t *testing.T, dev *testDevice, want ...*Config) {
	t.Helper()
	got := dev.takeApplied()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("device received:")
		for _, c := range got {
			var b bytes.Buffer
			WriteSet(&b, c)
			t.Errorf("%s", b.String())
		}
		t.Errorf("want:")
		for _, c := range want {
			var b bytes.Buffer
			WriteSet(&b, c)
			t.Errorf("%s", b.String())
		}
	}
}

func TestWGSetAndShow(t *testing.T) {
	dev, name := startWG(t)
	priv := genKey(t)
	peer := genKey(t).PublicKey()
	keyFile := writeFile(t, "private", priv.Base64()+"\n")
	mustWG(t, "set", name, "private-key", keyFile, "listen-port", "51999",
		"peer", peer.String(), "allowed-ips", "100.64.0.2/32,fd7a::2/128",
		"endpoint", "198.18.0.2:51820", "persistent-keepalive", "25")
	expectApplied(t, dev, &Config{
		PrivateKey: &priv,
		ListenPort: ptr[uint16](51999),
		Peers: []PeerConfig{{
			PublicKey:           peer,
			Endpoint:            "198.18.0.2:51820",
			PersistentKeepalive: ptr[uint16](25),
			ReplaceAllowedIPs:   true,
			AllowedIPs:          pfxs("100.64.0.2/32", "fd7a::2/128"),
		}},
	})

	dev.setStats(peer, peerStats{handshake: time.Unix(1700000123, 456789), rx: 12345, tx: 67890})
	rows := dump(t, name)
	want := [][]string{
		{priv.Base64(), priv.PublicKey().String(), "51999", "off"},
		{peer.String(), "(none)", "198.18.0.2:51820", "100.64.0.2/32,fd7a::2/128", "1700000123", "12345", "67890", "25"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("wg show dump:\n%q\nwant:\n%q", rows, want)
	}

	mustWG(t, "set", name, "fwmark", "0x1234")
	expectApplied(t, dev, &Config{FwMark: ptr[uint32](0x1234)})
	if got := dump(t, name)[0][3]; got != "0x1234" {
		t.Errorf("fwmark shown as %q, want 0x1234", got)
	}
	if out := mustWG(t, "show", "interfaces"); !slices.Contains(strings.Fields(out), name) {
		t.Errorf("wg show interfaces = %q, does not list %s", out, name)
	}

	// An empty key file clears the private key: all zeros on the wire.
	mustWG(t, "set", name, "private-key", writeFile(t, "empty", ""))
	expectApplied(t, dev, &Config{PrivateKey: &noise.PrivateKey{}})
	if got := dump(t, name)[0][:2]; !reflect.DeepEqual(got, []string{"(none)", "(none)"}) {
		t.Errorf("keys after clearing: %q", got)
	}
}

func TestWGSetconfAndRemove(t *testing.T) {
	dev, name := startWG(t)
	old := genKey(t).PublicKey()
	mustWG(t, "set", name, "peer", old.String(), "allowed-ips", "10.9.0.0/16")
	dev.takeApplied()

	priv := genKey(t)
	a, b := genKey(t).PublicKey(), genKey(t).PublicKey()
	psk := noise.PresharedKey(genKey(t))
	conf := "[Interface]\nPrivateKey = " + priv.Base64() + "\nListenPort = 51998\nFwMark = 16\n\n" +
		"[Peer]\nPublicKey = " + a.String() + "\nPresharedKey = " + base64.StdEncoding.EncodeToString(psk[:]) +
		"\nAllowedIPs = 10.0.0.0/24, fd00::/64\nEndpoint = [fd00::1]:51820\nPersistentKeepalive = 5\n\n" +
		"[Peer]\nPublicKey = " + b.String() + "\nAllowedIPs = 10.1.0.0/24\n"
	mustWG(t, "setconf", name, writeFile(t, "wg.conf", conf))
	expectApplied(t, dev, &Config{
		PrivateKey:   &priv,
		ListenPort:   ptr[uint16](51998),
		FwMark:       ptr[uint32](16),
		ReplacePeers: true,
		Peers: []PeerConfig{{
			PublicKey:           a,
			PresharedKey:        &psk,
			Endpoint:            "[fd00::1]:51820",
			PersistentKeepalive: ptr[uint16](5),
			ReplaceAllowedIPs:   true,
			AllowedIPs:          pfxs("10.0.0.0/24", "fd00::/64"),
		}, {
			PublicKey:         b,
			ReplaceAllowedIPs: true,
			AllowedIPs:        pfxs("10.1.0.0/24"),
		}},
	})
	// replace_peers dropped the old peer.
	peers := strings.Fields(mustWG(t, "show", name, "peers"))
	slices.Sort(peers)
	wantPeers := []string{a.String(), b.String()}
	slices.Sort(wantPeers)
	if !reflect.DeepEqual(peers, wantPeers) {
		t.Errorf("peers after setconf: %q, want %q", peers, wantPeers)
	}
	rows := dump(t, name)
	want := [][]string{
		{priv.Base64(), priv.PublicKey().String(), "51998", "0x10"},
		{a.String(), base64.StdEncoding.EncodeToString(psk[:]), "[fd00::1]:51820", "10.0.0.0/24,fd00::/64", "0", "0", "0", "5"},
		{b.String(), "(none)", "(none)", "10.1.0.0/24", "0", "0", "0", "off"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("wg show dump:\n%q\nwant:\n%q", rows, want)
	}

	mustWG(t, "set", name, "peer", b.String(), "remove")
	expectApplied(t, dev, &Config{Peers: []PeerConfig{{PublicKey: b, Remove: true}}})
	if peers := strings.Fields(mustWG(t, "show", name, "peers")); !reflect.DeepEqual(peers, []string{a.String()}) {
		t.Errorf("peers after remove: %q", peers)
	}
}

func TestWGReportsErrno(t *testing.T) {
	dev, name := startWG(t)
	dev.setApplyErr(Errorf(EADDRINUSE, "port taken"))
	_, err := wg(t, "set", name, "listen-port", "1")
	if err == nil || !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("wg set with a failing device: %v, want \"Address already in use\"", err)
	}
	dev.setApplyErr(nil)
	mustWG(t, "set", name, "listen-port", "2")
	if got := dump(t, name)[0][2]; got != "2" {
		t.Errorf("listen port %q after a good set", got)
	}
}
