package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/warrenmesh/warren/internal/noise"
)

// Files in the state directory.
const (
	keyFile    = "node.key"    // the node's WireGuard/control private key, 0600
	prefsFile  = "prefs.json"  // what the user asked for (server, running)
	netmapFile = "netmap.json" // the last good network map
	// resolvBackupFile is the host resolver file before --accept-dns.
	resolvBackupFile = "resolv.conf.orig"
)

// prefs is what `warren up/down/logout` decided, kept across restarts.
type prefs struct {
	ServerURL   string `json:"serverURL,omitempty"`
	ServerKey   string `json:"serverKey,omitempty"` // pinned on first join
	Hostname    string `json:"hostname,omitempty"`
	Registered  bool   `json:"registered"`
	WantRunning bool   `json:"wantRunning"`
	AcceptDNS   bool   `json:"acceptDNS"` // point the host resolver at MagicDNS

	// Routes (routes.go).
	AdvertiseRoutes   []netip.Prefix `json:"advertiseRoutes,omitempty"`
	AdvertiseExitNode bool           `json:"advertiseExitNode,omitempty"`
	AcceptRoutes      bool           `json:"acceptRoutes,omitempty"`
	ExitNode          string         `json:"exitNode,omitempty"` // peer name or address, "auto", "" none
	ExitNodeAllowLAN  bool           `json:"exitNodeAllowLAN,omitempty"`

	// RelayServerPort is the UDP port this node offers to serve as a peer
	// relay on (peerrelay.go; 0: none).
	RelayServerPort uint16 `json:"relayServerPort,omitempty"`
}

// writeFileAtomic writes data to path with mode perm so that a crash leaves
// either the old or the new file, never a torn one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ensureStateDir creates dir (0700) or checks an existing one is not open
// to other users.
func ensureStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state directory %s is open to other users and cannot be fixed: %w", dir, err)
		}
	}
	return nil
}

// loadOrCreateKey returns the node key in dir, creating it on first use.
// A key file readable by others is refused: the key may have leaked.
func loadOrCreateKey(dir string) (noise.PrivateKey, error) {
	path := filepath.Join(dir, keyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newKey(dir)
	}
	if err != nil {
		return noise.PrivateKey{}, fmt.Errorf("node key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return noise.PrivateKey{}, fmt.Errorf("node key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return noise.PrivateKey{}, fmt.Errorf("node key %s has mode %04o: it must be readable by its owner only (chmod 600, and consider the key leaked)", path, fi.Mode().Perm())
	}
	k, err := noise.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil || k.IsZero() {
		return noise.PrivateKey{}, fmt.Errorf("node key %s is not a valid private key", path)
	}
	return k, nil
}

// newKey generates and stores a fresh node key.
func newKey(dir string) (noise.PrivateKey, error) {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		return noise.PrivateKey{}, fmt.Errorf("node key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, keyFile), []byte(k.Base64()+"\n"), 0o600); err != nil {
		return noise.PrivateKey{}, fmt.Errorf("node key: %w", err)
	}
	return k, nil
}

func loadPrefs(dir string) (prefs, error) {
	var p prefs
	b, err := os.ReadFile(filepath.Join(dir, prefsFile))
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("prefs: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("prefs %s: %w", filepath.Join(dir, prefsFile), err)
	}
	return p, nil
}

func savePrefs(dir string, p prefs) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, prefsFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("prefs: %w", err)
	}
	return nil
}
