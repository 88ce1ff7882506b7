package portmap

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// errNoGateway is returned when the main routing table has no IPv4 default
// route through a gateway.
var errNoGateway = errors.New("no IPv4 default gateway")

// DefaultGateway reads the IPv4 default route's gateway from
// /proc/net/route (the main table: a route an exit node installs in its own
// table is not the LAN's gateway) and the local address this host uses to
// reach it. control, if not nil, is applied to the socket used to find
// that address (the daemon's underlay mark).
func DefaultGateway(control func(network, address string, c syscall.RawConn) error) (gw, self netip.Addr, err error) {
	f, err := os.Open("/proc/thread-self/net/route") // this thread's namespace, as the sockets
	if err != nil {
		return gw, self, err
	}
	defer f.Close()
	gw, err = parseProcRoute(f)
	if err != nil {
		return gw, self, err
	}
	self, err = localAddrFor(gw, control)
	return gw, self, err
}

// parseProcRoute finds the default route's gateway in /proc/net/route's
// format: a header line, then Iface Destination Gateway Flags ... with the
// addresses as little-endian hex. The lowest metric wins.
func parseProcRoute(r io.Reader) (netip.Addr, error) {
	const rtfGateway = 0x2
	var best netip.Addr
	bestMetric := -1
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		dst, gwHex, flagsHex, maskHex := f[1], f[2], f[3], f[7]
		if dst != "00000000" || maskHex != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(flagsHex, 16, 32)
		if err != nil || flags&rtfGateway == 0 {
			continue
		}
		raw, err := hex.DecodeString(gwHex)
		if err != nil || len(raw) != 4 {
			continue
		}
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.LittleEndian.Uint32(raw))
		metric, err := strconv.Atoi(f[6])
		if err != nil {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = netip.AddrFrom4(a), metric
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, err
	}
	if !best.IsValid() || best.IsUnspecified() {
		return netip.Addr{}, errNoGateway
	}
	return best, nil
}

// localAddrFor is the source address the kernel picks to reach gw (a
// connected UDP socket sends nothing).
func localAddrFor(gw netip.Addr, control func(network, address string, c syscall.RawConn) error) (netip.Addr, error) {
	d := net.Dialer{Control: control}
	c, err := d.DialContext(context.Background(), "udp4", netip.AddrPortFrom(gw, pmpPort).String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return ap.Addr().Unmap(), nil
}
