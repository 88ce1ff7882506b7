package netmap

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "netmap.json")
	if _, err := Load(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of missing file: %v", err)
	}
	m1 := newGen(3).netmap(7)
	if err := Save(path, m1); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	got, err := Load(path)
	if err != nil || !got.Equal(m1) {
		t.Fatalf("Load = %v, %v", got, err)
	}

	// A crash mid-write leaves only a partial temp file: Load ignores it
	// and still returns the last complete map.
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(dir, ".netmap.json.tmp-123")
	if err := os.WriteFile(partial, full[:len(full)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path); err != nil || !got.Equal(m1) {
		t.Fatalf("Load with a partial temp file = %v", err)
	}
	// The next Save replaces the map and removes the leftover.
	m2 := newGen(4).netmap(8)
	if err := Save(path, m2); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path); err != nil || !got.Equal(m2) {
		t.Fatalf("Load after second Save = %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the map", len(ents))
	}

	// An invalid map is not saved and does not disturb the previous one.
	bad := m2.Clone()
	bad.Self.ID = 0
	if err := Save(path, bad); err == nil {
		t.Fatal("invalid map saved")
	}
	if got, err := Load(path); err != nil || !got.Equal(m2) {
		t.Fatalf("Load after refused Save = %v", err)
	}

	// A truncated map file (not written by Save) is reported, not half-loaded.
	if err := os.WriteFile(path, full[:len(full)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load of truncated file: %v", err)
	}
}

func TestSaveFailsCleanly(t *testing.T) {
	if err := Save(filepath.Join(t.TempDir(), "missing", "netmap.json"), newGen(5).netmap(1)); err == nil {
		t.Fatal("Save into a missing directory succeeded")
	}
}
