package netns

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// Paths of the binaries TestMain builds.
var (
	warrenBin string
	wggoBin   string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Without root every test skips (or, with WARREN_REQUIRE_NETNS=1,
	// fails in NeedNetns): building would be wasted.
	if os.Geteuid() != 0 && os.Getenv(nettest.RequireEnv) != "1" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "warren-netns-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// 0755: the daemons run as root anyway, but wg-quick's wrapper must be
	// able to exec the binary from any directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	warrenBin = filepath.Join(dir, "warren")
	wggoBin = filepath.Join(dir, "wireguard-go")
	for _, b := range []struct{ out, pkg string }{
		{warrenBin, "github.com/warrenmesh/warren/cmd/warren"},
		{wggoBin, "golang.zx2c4.com/wireguard"}, // pinned in go.mod as a tool
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build -o %s %s: %v\n%s", b.out, b.pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

// needTools skips the test when one of the named programs is missing, or
// fails it when WARREN_REQUIRE_NETNS=1.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "missing tools: " + strings.Join(missing, ", ")
	if os.Getenv(nettest.RequireEnv) == "1" {
		t.Fatalf("%s (and %s=1)", msg, nettest.RequireEnv)
	}
	t.Skip(msg)
}

// impl is a WireGuard implementation and the way it is run.
type impl int

const (
	warrenFG      impl = iota // warren wg -f IF under NS.Start
	warrenFGPlain             // the same with WARREN_TUN_NO_OFFLOAD=1
	warrenDaemon              // warren wg IF, which daemonizes
	wireguardGo               // wireguard-go -f IF under NS.Start
)

func (i impl) String() string {
	return [...]string{"warren -f", "warren -f (no offload)", "warren (daemon)", "wireguard-go"}[i]
}

// Underlay and tunnel addresses.
const (
	ul4A, ul4B = "198.18.0.1", "198.18.0.2"
	ul6A, ul6B = "fd00:198:18::1", "fd00:198:18::2"
	tun4A      = "100.64.0.1"
	tun4B      = "100.64.0.2"
	tun6A      = "fd7a:115c:a1e0::1"
	tun6B      = "fd7a:115c:a1e0::2"
	portA      = 51820
	portB      = 51821
)

type key struct{ priv, pub string } // base64, as wg(8) writes them

func newKey(t *testing.T) key {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key{
		priv: base64.StdEncoding.EncodeToString(k.Bytes()),
		pub:  base64.StdEncoding.EncodeToString(k.PublicKey().Bytes()),
	}
}

// writeKey writes a private key into a 0600 file for `wg set ... private-key`.
func writeKey(t *testing.T, k key) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "private.key")
	if err := os.WriteFile(f, []byte(k.priv+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func socketPath(ifname string) string { return "/var/run/wireguard/" + ifname + ".sock" }

// node is one WireGuard interface in its namespace.
type node struct {
	ns     *nettest.NS
	impl   impl
	ifname string
	key    key
	port   int

	stopOnce sync.Once
	stopFn   func(t *testing.T) // stops the daemon and checks that it is gone
}

// namespaces creates two namespaces joined by a veth pair with the IPv4
// underlay, and the IPv6 one too if v6. It returns a prefix unique to this
// test for interface names: "wr" and six hex digits.
func namespaces(t *testing.T, v6 bool) (a, b *nettest.NS, prefix string) {
	t.Helper()
	nettest.NeedNetns(t)
	needTools(t, "wg", "ping")
	a = nettest.NewNS(t, "wra")
	b = nettest.NewNS(t, "wrb")
	addrsA := []string{ul4A + "/24"}
	addrsB := []string{ul4B + "/24"}
	if v6 {
		addrsA = append(addrsA, ul6A+"/64")
		addrsB = append(addrsB, ul6B+"/64")
	}
	nettest.Veth(t, a, "ul0", addrsA, b, "ul1", addrsB)
	return a, b, "wr" + a.Name[len(a.Name)-6:]
}

// startNode runs implementation im for interface ifname in ns, waits until
// the interface and its configuration socket exist, and gives it a fresh key,
// the listen port and the tunnel addresses, and brings it up. A daemon is
// stopped, and checked to be gone with its socket, when the test ends.
func startNode(t *testing.T, ns *nettest.NS, im impl, ifname string, port int, addrs ...string) *node {
	t.Helper()
	if len(ifname) > 15 {
		t.Fatalf("interface name %q too long", ifname)
	}
	n := &node{ns: ns, impl: im, ifname: ifname, key: newKey(t), port: port}
	switch im {
	case warrenFG, warrenFGPlain:
		offload := "WARREN_TUN_NO_OFFLOAD=0"
		if im == warrenFGPlain {
			offload = "WARREN_TUN_NO_OFFLOAD=1"
		}
		cmd := ns.Start(t, "env", "LOG_LEVEL=debug", offload, warrenBin, "wg", "-f", ifname)
		n.stopFn = func(t *testing.T) { stopForeground(t, n, cmd.Process.Pid) }
	case wireguardGo:
		cmd := ns.Start(t, "env", "LOG_LEVEL=verbose", wggoBin, "-f", ifname)
		n.stopFn = func(t *testing.T) { stopForeground(t, n, cmd.Process.Pid) }
	case warrenDaemon:
		// Returns once the interface and the socket exist.
		ns.Run(t, "env", "-u", "LOG_LEVEL", warrenBin, "wg", ifname)
		pid := findDaemon(t, ifname)
		n.stopFn = func(t *testing.T) { stopDaemon(t, n, pid) }
	}
	t.Cleanup(func() { n.stop(t) })
	wait.For(t, 5*time.Second, "configuration socket of "+ifname, func() bool {
		_, err := os.Stat(socketPath(ifname))
		return err == nil
	})
	wait.For(t, 5*time.Second, "interface "+ifname, func() bool {
		_, err := ns.Output("ip", "link", "show", "dev", ifname)
		return err == nil
	})
	n.wg(t, "set", ifname, "private-key", writeKey(t, n.key), "listen-port", strconv.Itoa(port))
	for _, a := range addrs {
		nettest.AddAddr(t, ns, ifname, a)
	}
	ns.Run(t, "ip", "link", "set", ifname, "up")
	for _, a := range addrs {
		nettest.WaitLocalRoute(t, ns, a)
	}
	return n
}

// stop stops the node's daemon once and checks that it exited.
func (n *node) stop(t *testing.T) {
	n.stopOnce.Do(func() { n.stopFn(t) })
}

// stopForeground stops a daemon run under NS.Start with SIGTERM, so that it
// removes its socket, and checks that it is gone. (NS cleanup kills it anyway
// if it did not exit.)
func stopForeground(t *testing.T, n *node, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Errorf("%s %s: SIGTERM: %v", n.impl, n.ifname, err)
		return
	}
	checkGone(t, n, pid)
}

// stopDaemon stops a daemonized warren the way wg-quick does: by deleting
// its interface, which it must notice and exit on.
func stopDaemon(t *testing.T, n *node, pid int) {
	t.Helper()
	if out, err := n.ns.Output("ip", "link", "del", "dev", n.ifname); err != nil {
		t.Errorf("%v\n%s", err, out)
	}
	if !checkGone(t, n, pid) {
		syscall.Kill(pid, syscall.SIGKILL) // we started it
		os.Remove(socketPath(n.ifname))
	}
}

// checkGone waits for the socket to disappear and the process to exit.
func checkGone(t *testing.T, n *node, pid int) bool {
	t.Helper()
	ok := true
	if !wait.Poll(10*time.Second, func() bool {
		_, err := os.Stat(socketPath(n.ifname))
		return os.IsNotExist(err)
	}) {
		t.Errorf("%s %s: socket %s still there 10 s after stopping", n.impl, n.ifname, socketPath(n.ifname))
		ok = false
	}
	if !wait.Poll(10*time.Second, func() bool { return exited(pid) }) {
		t.Errorf("%s %s: process %d still running 10 s after stopping", n.impl, n.ifname, pid)
		ok = false
	}
	return ok
}

// exited reports whether process pid is gone or a zombie (a daemon is
// reparented to an init that may not reap it promptly).
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// findDaemon returns the pid of the `warren wg IFNAME` process serving
// ifname (a daemon re-executes itself: argv[0] is its resolved path).
func findDaemon(t *testing.T, ifname string) int {
	t.Helper()
	bin, err := filepath.EvalSymlinks(warrenBin)
	if err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		cmdline, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		if len(args) != 3 || args[1] != "wg" || args[2] != ifname {
			continue
		}
		if exe, err := os.Readlink(d + "/exe"); err != nil || exe != bin {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		if !exited(pid) {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("want exactly one process `%s wg %s`, found %v", bin, ifname, pids)
	}
	return pids[0]
}

// wg runs wg(8) with args in the node's namespace.
func (n *node) wg(t *testing.T, args ...string) {
	t.Helper()
	n.ns.Run(t, append([]string{"wg"}, args...)...)
}

// addPeer configures other as n's peer with the given allowed IPs and, if
// not empty, endpoint.
func (n *node) addPeer(t *testing.T, other *node, endpoint string, allowed ...string) {
	t.Helper()
	args := []string{"set", n.ifname, "peer", other.key.pub, "allowed-ips", strings.Join(allowed, ",")}
	if endpoint != "" {
		args = append(args, "endpoint", endpoint)
	}
	n.wg(t, args...)
}

// peerDump is a peer line of `wg show IF dump`.
type peerDump struct {
	pub, endpoint, allowedIPs string
	handshake                 int64 // unix seconds, 0 if none
	rx, tx                    int64
	keepalive                 string
}

func (n *node) dump(t *testing.T) map[string]peerDump {
	t.Helper()
	out, err := n.ns.Output("wg", "show", n.ifname, "dump")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || len(strings.Split(lines[0], "\t")) != 4 {
		t.Fatalf("wg show %s dump: bad interface line:\n%s", n.ifname, out)
	}
	peers := map[string]peerDump{}
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		if len(f) != 8 {
			t.Fatalf("wg show %s dump: bad peer line %q", n.ifname, l)
		}
		var p peerDump
		p.pub, p.endpoint, p.allowedIPs, p.keepalive = f[0], f[2], f[3], f[7]
		var errs [3]error
		p.handshake, errs[0] = strconv.ParseInt(f[4], 10, 64)
		p.rx, errs[1] = strconv.ParseInt(f[5], 10, 64)
		p.tx, errs[2] = strconv.ParseInt(f[6], 10, 64)
		for _, err := range errs {
			if err != nil {
				t.Fatalf("wg show %s dump: bad peer line %q: %v", n.ifname, l, err)
			}
		}
		peers[p.pub] = p
	}
	return peers
}

// peer returns n's dump line for other.
func (n *node) peer(t *testing.T, other *node) peerDump {
	t.Helper()
	p, ok := n.dump(t)[other.key.pub]
	if !ok {
		t.Fatalf("%s: no peer %s in wg show dump", n.ifname, other.key.pub)
	}
	return p
}

// ping pings addr from n until it has two replies, for up to six seconds
// (the first packet also waits for the handshake).
func (n *node) ping(t *testing.T, addr string) {
	t.Helper()
	args := []string{"ping", "-n", "-q", "-c", "2", "-i", "0.2", "-w", "6"}
	if strings.Contains(addr, ":") {
		args = append(args, "-6")
	}
	if out, err := n.ns.Output(append(args, addr)...); err != nil {
		t.Fatalf("%s: %v\n%s", n.ifname, err, out)
	}
}

// iperfResult is what an iperf3 --bidir run moved, as counted by the
// receiving ends (TCP payload).
type iperfResult struct {
	up, down int64 // client to server, server to client
}

// iperf runs an iperf3 server on srv and a two-second bidirectional TCP test
// to addr from cli.
func iperf(t *testing.T, cli, srv *node, addr string) iperfResult {
	t.Helper()
	const port = "5201"
	srv.ns.Start(t, "iperf3", "-s", "-1", "-p", port)
	wait.For(t, 5*time.Second, "iperf3 server listening in "+srv.ns.Name, func() bool {
		out, err := srv.ns.Output("ss", "-Hltn", "sport = :"+port)
		return err == nil && strings.Contains(out, ":"+port)
	})
	out, err := cli.ns.Output("timeout", "30", "iperf3", "-c", addr, "-p", port, "-t", "2", "--bidir", "-J")
	var res struct {
		Error string
		End   struct {
			SumReceived        struct{ Bytes int64 } `json:"sum_received"`
			SumReceivedReverse struct{ Bytes int64 } `json:"sum_received_bidir_reverse"`
		}
	}
	// iperf3 -J writes its JSON (with any "error") to stdout even on failure.
	if jerr := json.Unmarshal(jsonPart(out), &res); err != nil || jerr != nil || res.Error != "" {
		t.Fatalf("iperf3 -c %s from %s: %v %v %s\n%s", addr, cli.ns.Name, err, jerr, res.Error, out)
	}
	r := iperfResult{up: res.End.SumReceived.Bytes, down: res.End.SumReceivedReverse.Bytes}
	t.Logf("iperf3 %s: %d bytes up, %d bytes down in 2 s", addr, r.up, r.down)
	if r.up <= 0 || r.down <= 0 {
		t.Fatalf("iperf3 -c %s: nothing received (up %d, down %d)\n%s", addr, r.up, r.down, out)
	}
	return r
}

// jsonPart strips anything a tool printed around a JSON document.
func jsonPart(out string) []byte {
	b := []byte(out)
	i, j := bytes.IndexByte(b, '{'), bytes.LastIndexByte(b, '}')
	if i < 0 || j < i {
		return b
	}
	return b[i : j+1]
}

// checkPeer checks n's dump line for other: a handshake within the last
// minute, at least minRx/minTx bytes (and more than zero) received from and
// sent to it, and the endpoint.
func checkPeer(t *testing.T, n, other *node, endpoint string, minRx, minTx int64) {
	t.Helper()
	p := n.peer(t, other)
	t.Logf("%s (%s) peer %s: endpoint %s, handshake %d, rx %d, tx %d", n.ifname, n.impl, other.ifname, p.endpoint, p.handshake, p.rx, p.tx)
	now := time.Now().Unix()
	if p.handshake == 0 || p.handshake > now+1 || now-p.handshake > 60 {
		t.Errorf("%s: latest handshake %d, want within the last minute of %d", n.ifname, p.handshake, now)
	}
	if p.rx <= 0 || p.rx < minRx {
		t.Errorf("%s: transfer-rx %d, want > 0 and >= %d", n.ifname, p.rx, minRx)
	}
	if p.tx <= 0 || p.tx < minTx {
		t.Errorf("%s: transfer-tx %d, want > 0 and >= %d", n.ifname, p.tx, minTx)
	}
	if p.endpoint != endpoint {
		t.Errorf("%s: endpoint %q, want %q", n.ifname, p.endpoint, endpoint)
	}
}

func hostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}
