// Package loopowner tells which user owns the other end of a loopback TCP
// connection, from the kernel's socket tables (/proc/net/tcp and tcp6 of
// the caller's network namespace). The userspace daemon's proxies use it
// so that on a shared host only the user who runs the daemon (and root)
// can reach the mesh through them.
package loopowner

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ErrNotFound is returned when no socket matches the connection (it was
// closed meanwhile, or it is not a local one).
var ErrNotFound = errors.New("loopowner: the connection's peer socket was not found")

// UID returns the owner of the socket at the other end of c, an accepted
// TCP connection from this host.
func UID(c net.Conn) (int, error) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, errors.New("loopowner: not a TCP connection")
	}
	// The peer's socket has our remote address as its local one.
	return lookup(remote.AddrPort(), local.AddrPort())
}

func lookup(peerLocal, peerRemote netip.AddrPort) (int, error) {
	files := []string{"/proc/net/tcp", "/proc/net/tcp6"}
	if peerLocal.Addr().Is6() && !peerLocal.Addr().Is4In6() {
		files = files[1:]
	}
	for _, f := range files {
		uid, err := scan(f, peerLocal, peerRemote)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return uid, err
		}
	}
	return 0, ErrNotFound
}

func scan(file string, local, remote netip.AddrPort) (int, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		l, err1 := parseAddr(fields[1])
		r, err2 := parseAddr(fields[2])
		if err1 != nil || err2 != nil || !same(l, local) || !same(r, remote) {
			continue
		}
		uid, err := strconv.Atoi(fields[7])
		if err != nil {
			return 0, fmt.Errorf("loopowner: %s: bad uid %q", file, fields[7])
		}
		return uid, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, ErrNotFound
}

func same(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// parseAddr parses the kernel's "HEXADDR:HEXPORT": the address as 32-bit
// words in host (little-endian) order.
func parseAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, errors.New("no port")
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, errors.New("bad address")
	}
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.LittleEndian.Uint32(b[i:]))
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// Listener passes on only the connections whose peer belongs to uid or
// to root; others are closed and logged.
type Listener struct {
	net.Listener
	UID    int
	Logger *slog.Logger
	// Refused counts the connections closed.
	Refused func()
}

// Accept returns the next connection from an allowed user.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := UID(c)
		if err == nil && (uid == l.UID || uid == 0) {
			return c, nil
		}
		if l.Logger != nil {
			l.Logger.Warn("proxy connection refused: another user's", "addr", l.Listener.Addr().String(), "uid", uid, "err", err)
		}
		if l.Refused != nil {
			l.Refused()
		}
		c.Close()
	}
}
