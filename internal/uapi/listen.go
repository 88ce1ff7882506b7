package uapi

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Dir is the directory holding the IFNAME.sock sockets. wg(8) and
// wg-quick(8) look only in /var/run/wireguard; change it only in tests,
// before any Listen.
var Dir = "/var/run/wireguard"

// ErrInUse is returned (wrapped) by Listen when another process already
// serves the interface's socket.
var ErrInUse = errors.New("interface already in use")

// SocketPath returns the socket path for an interface: Dir/IFNAME.sock.
func SocketPath(ifname string) string { return filepath.Join(Dir, ifname+".sock") }

// CheckIfname validates an interface name the way Linux does: 1 to 15
// bytes, not "." or "..", and no '/', ':', NUL or white space.
func CheckIfname(name string) error {
	if len(name) == 0 || len(name) > 15 {
		return fmt.Errorf("uapi: interface name %q must be 1 to 15 bytes", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("uapi: invalid interface name %q", name)
	}
	if strings.ContainsAny(name, "/:\x00 \t\n\v\f\r") {
		return fmt.Errorf("uapi: interface name %q contains '/', ':', NUL or white space", name)
	}
	return nil
}

// Listen creates the configuration socket Dir/IFNAME.sock, reachable by
// root only (mode 0600 in a directory of mode 0755, created if missing).
// It fails with an error wrapping ErrInUse if a live server already answers
// on that socket, and removes a stale socket left by a dead one; it refuses
// to remove anything that is not a socket.
//
// The socket is bound inside a fresh mode-0700 directory, set to 0600, and
// then hard-linked into place, so no other user can connect during setup
// (no process-wide umask is touched) and two servers racing for one name
// cannot both win. Close on the returned listener removes the socket file,
// unless it has meanwhile been replaced by another one.
func Listen(ifname string) (net.Listener, error) { return listenIn(Dir, ifname) }

type listener struct {
	*net.UnixListener
	path string
	fi   fs.FileInfo
	once sync.Once
}

func (l *listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *listener) Close() error {
	l.once.Do(func() {
		if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return l.UnixListener.Close()
}

func listenIn(dir, ifname string) (net.Listener, error) {
	if err := CheckIfname(ifname); err != nil {
		return nil, err
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ifname+".sock")
	tmpDir, err := os.MkdirTemp(dir, ".bind-"+ifname+"-") // mode 0700
	if err != nil {
		return nil, fmt.Errorf("uapi: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("uapi: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("uapi: %w", err))
	}
	for attempt := 0; ; attempt++ {
		err := os.Link(tmp, path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || attempt == 3 {
			return fail(fmt.Errorf("uapi: placing socket: %w", err))
		}
		if err := clearStale(path); err != nil {
			return fail(err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("uapi: %w", err))
	}
	return &listener{UnixListener: ln, path: path, fi: fi}, nil
}

// ensureDir creates dir with mode 0755 if it is missing.
func ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("uapi: %s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("uapi: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("uapi: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the umask may have narrowed it
		return fmt.Errorf("uapi: %w", err)
	}
	return nil
}

// clearStale removes the socket at path if nobody serves it any more. It
// returns nil when the path is free to take (or vanished meanwhile).
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("uapi: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("uapi: %s exists and is not a socket; not removing it", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("uapi: %s: %w", path, ErrInUse)
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED): // stale: nobody listening
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("uapi: removing stale socket: %w", err)
		}
		return nil
	case errors.Is(err, syscall.ENOENT):
		return nil
	default:
		// E.g. EAGAIN from a live server with a full backlog: not stale.
		return fmt.Errorf("uapi: checking %s: %w", path, err)
	}
}
