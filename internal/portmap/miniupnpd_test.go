package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// The miniupnpd lab: node (LAN 198.19.77.2) ─ router (LAN 198.19.77.1;
// WAN 11.19.77.1 and 198.18.77.1) ─ outside (198.18.77.2). The router
// masquerades with random ports (a hard NAT) and runs miniupnpd with
// NAT-PMP, PCP and UPnP-IGD on the LAN.
//
// The router's WAN carries one address outside 198.18.0.0/15, first:
// miniupnpd (2.2 and later) refuses to map anything while its external
// address is in any RFC 6890 special range — 198.18.0.0/15 included — so
// it needs a "public" one. 11.19.77.1/32 exists only inside these
// namespaces; the outside host routes it to the router.
const (
	labPort   = 41641
	labExt    = "11.19.77.1"
	labLANNet = "198.19.77.0/24"
	helperEnv = "WARREN_PORTMAP_HELPER"
	helperDir = "WARREN_PORTMAP_DIR"
	// helperRefresh shortens the helper's renewal interval.
	helperRefresh = "WARREN_PORTMAP_REFRESH"
	helperTest    = "TestMiniupnpdHelperProcess"
)

// miniupnpdRules are the router's nftables: the tables and chains
// miniupnpd 2.3 (nftables backend) adds its rules to — all of family inet,
// a chain "miniupnpd" in table "filter" and prerouting_miniupnpd /
// postrouting_miniupnpd in table "nat" — and the hard NAT.
const miniupnpdRules = `table inet filter {
	chain forward { type filter hook forward priority filter; policy accept; jump miniupnpd; }
	chain miniupnpd { }
}
table inet nat {
	chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump prerouting_miniupnpd; }
	chain postrouting { type nat hook postrouting priority srcnat; policy accept; jump postrouting_miniupnpd; oifname "wan0" masquerade random; }
	chain prerouting_miniupnpd { }
	chain postrouting_miniupnpd { }
}
`

const miniupnpdConf = `ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=no
uuid=9d0b8c7e-5a2f-4c8e-8f00-77a1b2c3d4e5
upnp_table_name=filter
upnp_nat_table_name=nat
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 ` + labLANNet + ` 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv(nettest.RequireEnv) == "1" {
			t.Fatalf("%s not installed (%s)", name, pkg)
		}
		t.Skipf("%s not installed (%s)", name, pkg)
	}
}

type upnpLab struct {
	node, router, outside *nettest.NS
	miniupnpd             *exec.Cmd
	conf, pid             string
}

func newUPnPLab(t *testing.T) *upnpLab {
	t.Helper()
	nettest.NeedNetns(t)
	needTool(t, "miniupnpd", "miniupnpd-nftables")
	needTool(t, "nft", "nftables")
	l := &upnpLab{node: nettest.NewNS(t, "pmnode"), router: nettest.NewNS(t, "pmgw"), outside: nettest.NewNS(t, "pmout")}
	nettest.Veth(t, l.node, "eth0", []string{"198.19.77.2/24"}, l.router, "lan0", []string{"198.19.77.1/24"})
	nettest.Veth(t, l.router, "wan0", []string{labExt + "/32", "198.18.77.1/24"}, l.outside, "eth0", []string{"198.18.77.2/24"})
	l.node.Run(t, "ip", "route", "add", "default", "via", "198.19.77.1")
	l.outside.Run(t, "ip", "route", "add", labExt+"/32", "via", "198.18.77.1")
	l.router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	dir := t.TempDir()
	rules, conf := filepath.Join(dir, "rules.nft"), filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(rules, []byte(miniupnpdRules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(miniupnpdConf), 0o644); err != nil {
		t.Fatal(err)
	}
	l.router.Run(t, "nft", "-f", rules)
	l.conf, l.pid = conf, filepath.Join(dir, "miniupnpd.pid")
	l.startMiniupnpd(t)
	return l
}

// startMiniupnpd runs miniupnpd in the router and waits until it listens.
func (l *upnpLab) startMiniupnpd(t *testing.T) {
	t.Helper()
	// -d: foreground, logs on stderr; -4: no IPv6; its own pid file.
	l.miniupnpd = l.router.Start(t, "miniupnpd", "-d", "-4", "-f", l.conf, "-P", l.pid)
	wait.For(t, 10*time.Second, "miniupnpd listening on 5351", func() bool {
		return l.listening()
	})
}

func (l *upnpLab) listening() bool {
	out, _ := l.router.Output("ss", "-Hlun", "sport = :5351")
	return strings.Contains(out, "5351")
}

// restartMiniupnpd reboots the gateway as far as port mapping goes:
// miniupnpd stops (it leaves its rules behind), its chains are flushed (a
// reboot loses them), and it starts again with a new epoch and no mappings.
func (l *upnpLab) restartMiniupnpd(t *testing.T) {
	t.Helper()
	if err := l.miniupnpd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "miniupnpd stopped", func() bool { return !l.listening() })
	l.router.Run(t, "nft", "flush", "chain", "inet", "nat", "prerouting_miniupnpd")
	l.router.Run(t, "nft", "flush", "chain", "inet", "filter", "miniupnpd")
	l.startMiniupnpd(t)
}

// TestMiniupnpd maps the node's port through a real miniupnpd with each
// protocol, behind a hard NAT: the mapping is granted, a datagram sent
// from outside to the mapped endpoint reaches the node's port (its echo
// comes back from the mapped endpoint), and the mapping is deleted when
// the client closes.
func TestMiniupnpd(t *testing.T) {
	l := newUPnPLab(t)
	l.checkHardNAT(t)
	for _, p := range []Protocol{PCP, NATPMP, UPnP} {
		t.Run(string(p), func(t *testing.T) {
			dir := t.TempDir()
			cmd, ext := l.startHelper(t, p, dir, "")
			if ext.Addr() != netip.MustParseAddr(labExt) {
				t.Fatalf("mapped %v, want on %s", ext, labExt)
			}
			t.Logf("%s: mapped %v", p, ext)
			l.checkReaches(t, ext)
			rule, _ := l.router.Output("nft", "list", "chain", "inet", "nat", "prerouting_miniupnpd")
			if !strings.Contains(rule, fmt.Sprintf("dport %d", ext.Port())) {
				t.Fatalf("no DNAT rule for %v:\n%s", ext, rule)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "the mapping deleted", func() bool {
				b, err := os.ReadFile(filepath.Join(dir, "deleted"))
				return err == nil && len(b) > 0
			})
			if b, _ := os.ReadFile(filepath.Join(dir, "deleted")); string(b) != "ok" {
				t.Fatalf("delete: %s", b)
			}
			rule, _ = l.router.Output("nft", "list", "chain", "inet", "nat", "prerouting_miniupnpd")
			if strings.Contains(rule, fmt.Sprintf("dport %d", ext.Port())) {
				t.Fatalf("DNAT rule left after delete:\n%s", rule)
			}
		})
	}
}

// startHelper runs TestMiniupnpdHelperProcess in the node's namespace
// with protocol p and waits for its mapping.
func (l *upnpLab) startHelper(t *testing.T, p Protocol, dir, refresh string) (*exec.Cmd, netip.AddrPort) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := l.node.Start(t, "env", helperEnv+"="+string(p), helperDir+"="+dir, helperRefresh+"="+refresh,
		exe, "-test.run=^"+helperTest+"$", "-test.v")
	// Gone with the subtest, so that the next one can bind the port even
	// when this one failed before stopping it.
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var ext netip.AddrPort
	wait.For(t, 20*time.Second, "a mapping from miniupnpd", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "mapped"))
		if err != nil {
			return false
		}
		ext, err = netip.ParseAddrPort(string(b))
		return err == nil
	})
	return cmd, ext
}

// dnatRule reports whether miniupnpd's DNAT rule for port is installed.
func (l *upnpLab) dnatRule(port uint16) bool {
	rule, _ := l.router.Output("nft", "list", "chain", "inet", "nat", "prerouting_miniupnpd")
	return strings.Contains(rule, fmt.Sprintf("dport %d ", port))
}

// TestMiniupnpdRestart: the gateway restarts (miniupnpd's epoch starts
// again, its mappings are gone, its HTTP server on another port); the
// client's next renewal sees the epoch go back (PCP, NAT-PMP), counts it
// and maps again, or finds the UPnP service again and re-adds the mapping,
// and the port is reachable again.
func TestMiniupnpdRestart(t *testing.T) {
	l := newUPnPLab(t)
	for _, p := range []Protocol{PCP, NATPMP, UPnP} {
		t.Run(string(p), func(t *testing.T) {
			dir := t.TempDir()
			cmd, ext := l.startHelper(t, p, dir, "2s")
			l.checkReaches(t, ext)
			// A few renewals with consistent epochs first: none counted.
			wait.For(t, 15*time.Second, "three renewals", func() bool { return helperCount(dir, "renewals") >= 3 })
			if n := helperCount(dir, "badepoch"); n != 0 {
				t.Fatalf("%d inconsistent epochs before any restart", n)
			}
			l.restartMiniupnpd(t)
			if p != UPnP { // UPnP has no epoch
				wait.For(t, 15*time.Second, "the restart's epoch noticed", func() bool { return helperCount(dir, "badepoch") >= 1 })
			}
			wait.For(t, 15*time.Second, "the mapping re-created after the restart", func() bool { return l.dnatRule(ext.Port()) })
			l.checkReaches(t, ext)
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "the helper done", func() bool {
				b, err := os.ReadFile(filepath.Join(dir, "deleted"))
				return err == nil && len(b) > 0
			})
			t.Logf("%s: inconsistent epochs counted: %d", p, helperCount(dir, "badepoch"))
		})
	}
}

// TestMiniupnpdAnnouncesRestart: with the default renewal (5 minutes away)
// a gateway reboot is still noticed at once — miniupnpd announces its
// start to 224.0.0.1:5350 (PCP ANNOUNCE, NAT-PMP address notification)
// and the client maps again: nothing else would send a MAP request before
// the renewal. (The epoch may not even have moved: the restart comes
// within a second of the first mapping.)
func TestMiniupnpdAnnouncesRestart(t *testing.T) {
	l := newUPnPLab(t)
	dir := t.TempDir()
	_, ext := l.startHelper(t, PCP, dir, "")
	l.restartMiniupnpd(t)
	wait.For(t, 15*time.Second, "the mapping re-created after the announced restart", func() bool { return l.dnatRule(ext.Port()) })
	l.checkReaches(t, ext)
}

// helperCount reads a counter the helper process writes to dir.
func helperCount(dir, name string) int {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return -1
	}
	return n
}

// checkHardNAT shows the router is a hard NAT: two flows from the node to
// the outside leave from ports other than their own.
func (l *upnpLab) checkHardNAT(t *testing.T) {
	t.Helper()
	var srv *net.UDPConn
	if err := l.outside.Do(func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 3478})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	preserved := 0
	for _, port := range []int{40001, 40002} {
		var c *net.UDPConn
		if err := l.node.Do(func() (err error) {
			c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP("198.18.77.2"), Port: 3478}); err != nil {
			t.Fatal(err)
		}
		_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		_, from, err := srv.ReadFromUDPAddrPort(buf)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if from.Port() == uint16(port) {
			preserved++
		}
	}
	if preserved == 2 {
		t.Fatal("the router kept the source ports: not a hard NAT")
	}
}

// checkReaches sends from outside to ext until the node's echo comes back
// from ext.
func (l *upnpLab) checkReaches(t *testing.T, ext netip.AddrPort) {
	t.Helper()
	var c *net.UDPConn
	if err := l.outside.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	wait.For(t, 10*time.Second, "the node's echo through the mapping", func() bool {
		if _, err := c.WriteToUDPAddrPort([]byte("hello"), ext); err != nil {
			return false
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		return err == nil && from == ext && string(buf[:n]) == "echo:hello"
	})
}

// TestMiniupnpdHelperProcess is the node side of TestMiniupnpd, run in the
// node's namespace as its own process (UPnP's HTTP dials from goroutines,
// which a namespace switched on one thread would not hold): it binds the
// "WireGuard" port and echoes what arrives, keeps a mapping with one
// protocol, writes it to $WARREN_PORTMAP_DIR/mapped, and on SIGTERM
// deletes it and writes the outcome to .../deleted.
func TestMiniupnpdHelperProcess(t *testing.T) {
	proto, dir := os.Getenv(helperEnv), os.Getenv(helperDir)
	if proto == "" {
		t.Skip("the node side of TestMiniupnpd; runs only as its helper process")
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{Port: labPort})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	refresh, _ := time.ParseDuration(os.Getenv(helperRefresh)) // 0: the default
	c := New(Options{Port: labPort, Protocols: []Protocol{Protocol(proto)}, Refresh: refresh,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	if !wait.Poll(15*time.Second, func() bool { _, ok := c.Mapping(); return ok }) {
		t.Fatal("no mapping")
	}
	m, _ := c.Mapping()
	if err := os.WriteFile(filepath.Join(dir, "mapped"), []byte(m.External.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Counters for the test: renewals (a new Obtained time) and the
	// inconsistent epochs seen, written as they change.
	renewals, last := 0, m.Obtained
	write := func(name string, n int) {
		tmp := filepath.Join(dir, name+".tmp")
		if os.WriteFile(tmp, []byte(strconv.Itoa(n)), 0o644) == nil {
			_ = os.Rename(tmp, filepath.Join(dir, name))
		}
	}
	write("renewals", 0)
	write("badepoch", 0)
	for ctx.Err() == nil {
		wait.Poll(100*time.Millisecond, func() bool { return ctx.Err() != nil })
		if m, ok := c.Mapping(); ok && !m.Obtained.Equal(last) {
			renewals, last = renewals+1, m.Obtained
			write("renewals", renewals)
		}
		write("badepoch", int(c.Stats.BadEpoch.Load()))
	}
	<-done
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := "ok"
	if err := c.Close(dctx); err != nil {
		res = err.Error()
	}
	if err := os.WriteFile(filepath.Join(dir, "deleted"), []byte(res), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
