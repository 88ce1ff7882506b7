// Package mesh holds Warren's end-to-end mesh tests: the real `warren`
// binary as coordination server and as node daemons, each in its own
// network namespace behind a router namespace, driven only through the CLI
// (`warren server`, `warren admin`, `warren up/status/ip/ping`) and checked
// with the kernel's ping through the tunnels. The suite runs on the
// embedded SQLite store and, when WARREN_TEST_POSTGRES names a server, on
// PostgreSQL (reached over its unix socket, which works from any namespace).
package mesh

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/store/storetest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

var (
	warrenBin string
	wggoBin   string // stock wireguard-go, for the WireGuard-only member (wireguard_test.go)
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 && os.Getenv(nettest.RequireEnv) != "1" {
		return m.Run()
	}
	if bin := os.Getenv(envMeshBin); bin != "" {
		// A test binary re-executed by a test (embed_test.go): the
		// parent built the binary.
		warrenBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "warren-mesh-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	warrenBin = filepath.Join(dir, "warren")
	wggoBin = filepath.Join(dir, "wireguard-go")
	for _, b := range []struct{ out, pkg string }{
		{warrenBin, "github.com/warrenmesh/warren/cmd/warren"},
		{wggoBin, "golang.zx2c4.com/wireguard"}, // pinned in go.mod as a tool
	} {
		if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

// lab is a router namespace with the server and the nodes each on their
// own /24 behind it.
type lab struct {
	t      *testing.T
	router *nettest.NS
	srv    *server
	nodes  []*node
	db     string // store DSN
	nets   int
	resolv string // if set, each new node's namespace gets this resolv.conf
	shared bool   // the core has the shared segment of adjacent NATs (natlab_test.go)
}

type server struct {
	ns      *nettest.NS
	dir     string
	url     string
	apiKey  string
	cmd     *exec.Cmd
	restart int
}

type node struct {
	l     *lab
	name  string
	ns    *nettest.NS
	dir   string
	sock  string
	cmd   *exec.Cmd
	under string // underlay address
}

func newLab(t *testing.T, db string) *lab {
	nettest.NeedNetns(t)
	for _, tool := range []string{"ip", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(nettest.RequireEnv) == "1" {
				t.Fatalf("%s not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	l := &lab{t: t, router: nettest.NewNS(t, "mrt"), db: db}
	l.router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return l
}

// attachNS puts an existing namespace behind the router on subnet
// 198.18.N.0/24 and returns its address.
func (l *lab) attachNS(ns *nettest.NS) string {
	l.nets++
	n := l.nets
	addr := fmt.Sprintf("198.18.%d.2", n)
	nettest.Veth(l.t, l.router, fmt.Sprintf("r%d", n), []string{fmt.Sprintf("198.18.%d.1/24", n)}, ns, "eth0", []string{addr + "/24"})
	ns.Run(l.t, "ip", "route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", n))
	return addr
}

// attach makes a namespace behind the router on subnet 198.18.N.0/24 and
// returns it with its address.
func (l *lab) attach(prefix string) (*nettest.NS, string) {
	ns := nettest.NewNS(l.t, prefix)
	return ns, l.attachNS(ns)
}

// warren runs the binary in ns and returns its stdout (stderr on failure).
func warren(ns *nettest.NS, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, warrenBin}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("warren %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (l *lab) must(ns *nettest.NS, args ...string) string {
	l.t.Helper()
	out, err := warren(ns, args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func (l *lab) startServer(extra ...string) {
	t := l.t
	ns, addr := l.attach("msrv")
	s := &server{ns: ns, dir: t.TempDir(), url: "http://" + addr + ":8080"}
	l.srv = s
	l.runServer(extra...)
	s.apiKey = l.must(ns, "server", "apikey", "create", "--data-dir", s.dir, "--db", l.db)
}

func (l *lab) runServer(extra ...string) {
	s := l.srv
	s.cmd = s.ns.Start(l.t, warrenBin, append([]string{"server", "--listen", strings.TrimPrefix(s.url, "http://"), "--data-dir", s.dir, "--db", l.db}, extra...)...)
	wait.For(l.t, 15*time.Second, "server listening", func() bool {
		_, err := s.ns.Output("bash", "-c", "exec 3<>/dev/tcp/"+strings.ReplaceAll(strings.TrimPrefix(s.url, "http://"), ":", "/"))
		return err == nil
	})
}

func (l *lab) killServer() {
	l.srv.cmd.Process.Signal(os.Kill)
	l.srv.cmd.Process.Wait()
}

// admin runs `warren admin` in the server's namespace, against the
// server's lab address over plain http: --insecure (the admin CLI refuses
// to send its key over plain http to a host that is not loopback).
func (l *lab) admin(args ...string) (string, error) {
	return warren(l.srv.ns, append([]string{"admin", "--server", l.srv.url, "--api-key", l.srv.apiKey, "--insecure"}, args...)...)
}

func (l *lab) mustAdmin(args ...string) string {
	l.t.Helper()
	out, err := l.admin(args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// startNode starts a daemon in a new namespace (not yet joined).
func (l *lab) startNode(name string) *node {
	ns, addr := l.attach("mn")
	if l.resolv != "" {
		netnsResolvConf(l.t, ns, l.resolv)
	}
	dir := l.t.TempDir()
	n := &node{l: l, name: name, ns: ns, dir: dir, sock: filepath.Join(dir, "warrend.sock"), under: addr}
	n.startDaemon()
	l.nodes = append(l.nodes, n)
	return n
}

func (n *node) startDaemon() {
	os.Remove(n.sock)
	n.cmd = n.ns.Start(n.l.t, warrenBin, "daemon", "--state-dir", filepath.Join(n.dir, "state"), "--socket", n.sock, "--tun", "warren0", "--verbose")
	waitDaemonSocket(n.l.t, n.name, n.sock)
}

// waitDaemonSocket waits until the daemon's API socket accepts a
// connection: the file appears at bind(), a moment before listen(), so
// waiting for the file alone let a `warren up` be refused.
func waitDaemonSocket(t *testing.T, name, sock string) {
	wait.For(t, 10*time.Second, name+" daemon socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill stops the daemon with SIGKILL.
func (n *node) kill() {
	n.cmd.Process.Signal(os.Kill)
	n.cmd.Process.Wait()
}

// up joins the node with key.
func (n *node) up(key string) (string, error) {
	return warren(n.ns, "up", "--socket", n.sock, "--server", n.l.srv.url, "--auth-key", key, "--hostname", n.name, "--timeout", "20s")
}

func (n *node) status() (*localapi.Status, error) {
	out, err := warren(n.ns, "status", "--json", "--socket", n.sock)
	if err != nil {
		return nil, err
	}
	var st localapi.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status --json: %v\n%s", err, out)
	}
	return &st, nil
}

// ips returns the node's tunnel addresses (IPv4, IPv6).
func (n *node) ips() (string, string) {
	n.l.t.Helper()
	v4 := n.l.must(n.ns, "ip", "-4", "--socket", n.sock)
	v6 := n.l.must(n.ns, "ip", "-6", "--socket", n.sock)
	return v4, v6
}

// pingOnce sends one kernel ping through the tunnel.
func (n *node) pingOnce(addr string, wait time.Duration) error {
	args := []string{"ping", "-c1", "-W", fmt.Sprintf("%.1f", wait.Seconds()), addr}
	if strings.Contains(addr, ":") {
		args = []string{"ping", "-6", "-c1", "-W", fmt.Sprintf("%.1f", wait.Seconds()), addr}
	}
	_, err := n.ns.Output(args...)
	return err
}

// backends lists the stores to run the suite on: SQLite always, PostgreSQL
// when WARREN_TEST_POSTGRES is set — reached over its unix socket, so that
// the server's namespace can use it.
func backends(t *testing.T) []storetest.Backend {
	bs := storetest.Backends(t)
	if pg := os.Getenv(storetest.EnvPostgres); pg != "" {
		u, err := url.Parse(pg)
		if err != nil || !strings.HasPrefix(u.Query().Get("host"), "/") {
			t.Fatalf("%s must reach the server over a unix socket (host=/dir) so the server namespace can use it: %s", storetest.EnvPostgres, pg)
		}
	}
	return bs
}

// mustPipe runs the binary in ns with stdin and returns its trimmed stdout.
func (l *lab) mustPipe(ns *nettest.NS, stdin string, args ...string) string {
	l.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, warrenBin}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		l.t.Fatalf("warren %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}
