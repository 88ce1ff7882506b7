package netmap

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Save writes m to path atomically: it writes a temporary file in the same
// directory (mode 0600), fsyncs it, renames it over path and fsyncs the
// directory. A crash at any point leaves either the previous file or the
// new one at path, never a truncated one; a leftover temporary file (named
// "."+base+".tmp-*") is ignored by Load and removed by the next Save.
// Callers must not run two Saves to the same path concurrently.
func Save(path string, m *NetworkMap) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("netmap: save %s: %w", path, err)
	}
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return fmt.Errorf("netmap: save %s: %w", path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if stale, _ := filepath.Glob(filepath.Join(dir, tempPattern(base))); len(stale) > 0 {
		for _, s := range stale {
			os.Remove(s)
		}
	}
	f, err := os.CreateTemp(dir, tempPattern(base))
	if err != nil {
		return fmt.Errorf("netmap: save: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("netmap: save: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("netmap: save: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("netmap: save: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("netmap: save: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("netmap: save: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("netmap: save: sync dir: %w", err)
		}
	}
	return nil
}

func tempPattern(base string) string { return "." + base + ".tmp-*" }

// Load reads and validates a map written by Save. A missing file yields an
// error satisfying errors.Is(err, fs.ErrNotExist).
func Load(path string) (*NetworkMap, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("netmap: load: %w", err)
	}
	m, err := DecodeNetworkMap(b)
	if err != nil {
		return nil, fmt.Errorf("netmap: load %s: %w", path, err)
	}
	return m, nil
}
