package mesh

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// policyUserspace: the userspace node (tag:us) reaches the web node's
// port 80 (and pings it); the web node reaches the userspace node's port
// 8000 and 8001; nothing else, and the third node (tag:other) nothing at all.
const policyUserspace = `{
	"tagOwners": {"tag:web": ["alice@"], "tag:us": ["alice@"], "tag:other": ["alice@"]},
	"acls": [
		{"action": "accept", "src": ["tag:us"], "dst": ["tag:web:80"]},
		{"action": "accept", "src": ["tag:web"], "dst": ["tag:us:8000,8001"]},
	],
}
`

// The unprivileged user the userspace daemon runs as.
const (
	usUser  = "nobody"
	usGroup = "nogroup"
)

// asUser runs a command in ns as the unprivileged user.
func asUser(args ...string) []string {
	return append([]string{"setpriv", "--reuid=" + usUser, "--regid=" + usGroup, "--clear-groups"}, args...)
}

// TestUserspace is issue #18's userspace story: a daemon started as an
// unprivileged user with --userspace (no TUN, no root) joins a mesh of TUN
// nodes; curl through its SOCKS5 and HTTP proxies reaches a TUN node's
// web server by MagicDNS name; a TUN node reaches a service on the
// userspace host's loopback through --forward-inbound; the policy denies
// what it should both ways; ping and status work; its state and API
// socket belong to the user, the socket 0600; another user of the host
// cannot use its proxies.
func TestUserspace(t *testing.T) {
	l := newLab(t, backends(t)[0].DSN(t))
	for _, tool := range []string{"curl", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (scripts/install-deps.sh)", tool)
		}
	}
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	os.WriteFile(pol, []byte(policyUserspace), 0o644)
	l.mustAdmin("policy", "set", pol)
	webKey := l.mustAdmin("authkeys", "create", "--user", "alice", "--tags", "tag:web")
	otherKey := l.mustAdmin("authkeys", "create", "--user", "alice", "--tags", "tag:other")
	usKey := l.mustAdmin("authkeys", "create", "--user", "alice", "--tags", "tag:us")

	web, other := l.startNode("web"), l.startNode("other")
	us := l.startUserspaceNode(t, "us")
	if out, err := us.warrenAs("up", "--socket", us.sock, "--server", l.srv.url, "--auth-key", usKey, "--hostname", "us", "--timeout", "20s"); err != nil {
		t.Fatalf("up as %s: %v\n%s", usUser, err, out)
	}
	parallel(t, []*node{web, other}, func(n *node) error {
		key := webKey
		if n == other {
			key = otherKey
		}
		_, err := n.up(key)
		return err
	})
	waitPeers(t, []*node{web, other, us}, 2, 20*time.Second)

	// The daemon runs as the user, and what it keeps is the user's.
	checkOwnedByUser(t, us)

	// Web serves on 80 (allowed) and 81 (not allowed) of its namespace.
	web.serveHTTP(t, 80, "hello from web")
	web.serveHTTP(t, 81, "web on 81")
	other.serveHTTP(t, 80, "hello from other")
	wv4, wv6 := web.ips()
	domain := us.domain(t)

	// Through SOCKS5 (names resolved by the proxy, through MagicDNS) and
	// the HTTP proxy, by the node's bare name and its full MagicDNS name.
	wait.For(t, 20*time.Second, "curl through SOCKS5 to web", func() bool {
		out, err := us.curl("--socks5-hostname", "127.0.0.1:1055", "http://web/")
		return err == nil && out == "hello from web"
	})
	for _, args := range [][]string{
		{"--socks5-hostname", "127.0.0.1:1055", "http://web." + domain + "/"},
		{"--socks5", "127.0.0.1:1055", "http://" + wv4 + "/"},
		{"--socks5", "127.0.0.1:1055", "http://[" + wv6 + "]/"},
		{"--proxy", "http://127.0.0.1:1056", "http://web." + domain + "/"},
		{"--proxy", "http://127.0.0.1:1056", "--proxytunnel", "http://web/"},
	} {
		if out, err := us.curl(args...); err != nil || out != "hello from web" {
			t.Fatalf("curl %v: %q %v", args, out, err)
		}
	}
	// Another user of the host cannot use the proxies (root can).
	for _, args := range [][]string{
		{"--socks5-hostname", "127.0.0.1:1055", "http://web/"},
		{"--proxy", "http://127.0.0.1:1056", "http://web/"},
	} {
		cmd := append([]string{"setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups", "curl", "-sS", "--fail", "--max-time", "8"}, args...)
		if out, err := us.ns.Output(cmd...); err == nil {
			t.Fatalf("another user reached the mesh through the proxy: curl %v: %q", args, out)
		}
	}
	if out, err := us.ns.Output("curl", "-sS", "--fail", "--max-time", "8", "--socks5-hostname", "127.0.0.1:1055", "http://web/"); err != nil || out != "hello from web" {
		t.Fatalf("root through the proxy: %q %v", out, err)
	}

	// Policy, outbound: web's filter drops the SYN to 81, other's to 80.
	for _, args := range [][]string{
		{"--socks5-hostname", "127.0.0.1:1055", "http://web:81/"},
		{"--socks5-hostname", "127.0.0.1:1055", "http://other/"},
		{"--proxy", "http://127.0.0.1:1056", "http://other/"},
	} {
		if out, err := us.curl(args...); err == nil {
			t.Fatalf("curl %v got through the policy: %q", args, out)
		}
	}
	// An unknown name is refused at once, not after a timeout.
	if out, err := us.curl("--socks5-hostname", "127.0.0.1:1055", "http://nosuchnode/"); err == nil || !strings.Contains(out, "(97)") && !strings.Contains(out, "unreachable") {
		t.Fatalf("unknown name through SOCKS5: %q %v", out, err)
	}

	// Ping and status through the user's daemon.
	if out, err := us.warrenAs("ping", "--socket", us.sock, "-c", "1", "web"); err != nil {
		t.Fatalf("ping web from the userspace node: %v\n%s", err, out)
	}
	if out, err := us.warrenAs("status", "--socket", us.sock); err != nil || !strings.Contains(out, "web") {
		t.Fatalf("status as %s: %v\n%s", usUser, err, out)
	}
	// The user's CLI finds the user's daemon without --socket.
	if out, err := us.ns.Output(asUser("env", "-u", "XDG_RUNTIME_DIR", "-u", "WARREN_SOCKET", "HOME="+us.dir, "XDG_STATE_HOME="+filepath.Join(us.dir, "state"), warrenBin, "status")...); err != nil || !strings.Contains(out, "web") {
		t.Fatalf("status as %s without --socket: %v\n%s", usUser, err, out)
	}
	us.captureDuringPing(t, "web", wv4)

	// --forward-inbound: a service on the userspace host's loopback,
	// reached from web (allowed, port 8000) but not from other.
	us.serveLoopback(t, 8000, "hello from the userspace host")
	usv4, usv6 := us.ipsAs(t)
	for _, a := range []string{usv4, usv6} {
		url := "http://" + net.JoinHostPort(a, "8000") + "/"
		var out string
		wait.For(t, 10*time.Second, "web → us:8000 forwarded", func() bool {
			o, err := web.ns.Output("curl", "-sS", "--max-time", "3", url)
			out = o
			return err == nil
		})
		if out != "hello from the userspace host" {
			t.Fatalf("web → %s: %q", url, out)
		}
		if o, err := other.ns.Output("curl", "-sS", "--max-time", "2", url); err == nil {
			t.Fatalf("other reached the userspace host's service: %q", o)
		}
	}
	// The userspace node's own filter dropped other's SYNs, and counted
	// them (metrics work in userspace mode).
	if d := us.policyDrops(t); d == 0 {
		t.Fatal("the userspace node counted no policy drops")
	}
	// A port with nothing behind it on the host is refused (reset).
	// (curl's exit 7: could not connect, at once, not a timeout's 28).
	if o, err := web.ns.Output("curl", "-sS", "--max-time", "3", "http://"+usv4+":8001/"); err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Fatalf("web → us:8001 (nothing listening): %q %v", o, err)
	}
}

// startUserspaceNode starts `warren daemon --userspace` as the
// unprivileged user in a new namespace, with its proxies and inbound
// forwarding, and joins nothing yet. Its state directory is the user's
// default ($XDG_STATE_HOME/warren), under a home the user owns.
func (l *lab) startUserspaceNode(t *testing.T, name string) *node {
	ns, addr := l.attach("mu")
	// The binary and the user's home must be reachable by the user.
	if err := os.Chmod(filepath.Dir(warrenBin), 0o755); err != nil {
		t.Fatal(err)
	}
	home, err := os.MkdirTemp("", "warren-us-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	uid, gid := lookupIDs(t)
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o755)
	n := &node{l: l, name: name, ns: ns, dir: home, sock: filepath.Join(home, "state", "warren", "warrend.sock"), under: addr}
	args := asUser("env", "-u", "XDG_RUNTIME_DIR", "HOME="+home, "XDG_STATE_HOME="+filepath.Join(home, "state"),
		warrenBin, "daemon", "--userspace", "--verbose",
		"--socks5", "127.0.0.1:1055", "--http-proxy", "127.0.0.1:1056", "--forward-inbound",
		"--proxy-dial-timeout", "3s", "--metrics-listen", "127.0.0.1:9100")
	n.cmd = ns.Start(t, args[0], args[1:]...)
	waitDaemonSocket(t, name, n.sock)
	l.nodes = append(l.nodes, n)
	return n
}

func lookupIDs(t *testing.T) (int, int) {
	out, err := exec.Command("id", "-u", usUser).Output()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	out, err = exec.Command("getent", "group", usGroup).Output()
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(strings.Split(strings.TrimSpace(string(out)), ":")[2])
	return uid, gid
}

// checkOwnedByUser: the daemon process runs as the user; its state
// directory, key and socket are the user's; the socket is 0600.
func checkOwnedByUser(t *testing.T, n *node) {
	uid, _ := lookupIDs(t)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid)) {
		t.Fatalf("the userspace daemon does not run as %s:\n%s", usUser, st)
	}
	if !strings.Contains(string(st), "\nCapEff:\t0000000000000000\n") {
		t.Fatalf("the userspace daemon has capabilities:\n%s", st)
	}
	for _, p := range []string{filepath.Dir(n.sock), n.sock} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
			t.Fatalf("%s is not owned by %s", p, usUser)
		}
	}
	fi, _ := os.Stat(n.sock)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("API socket mode %v, want 0600", fi.Mode().Perm())
	}
}

// serveHTTP serves body on port of n's namespace until the test ends.
func (n *node) serveHTTP(t *testing.T, port int, body string) {
	var ln net.Listener
	if err := n.ns.Do(func() (err error) { ln, err = net.Listen("tcp", ":"+strconv.Itoa(port)); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// serveLoopback serves body on 127.0.0.1:port of n's namespace.
func (n *node) serveLoopback(t *testing.T, port int, body string) {
	var ln net.Listener
	if err := n.ns.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// curl runs curl in n's namespace as the unprivileged user.
func (n *node) curl(args ...string) (string, error) {
	return n.ns.Output(asUser(append([]string{"curl", "-sS", "--fail", "--max-time", "8"}, args...)...)...)
}

// warrenAs runs the binary in n's namespace as the unprivileged user.
func (n *node) warrenAs(args ...string) (string, error) {
	return n.ns.Output(asUser(append([]string{warrenBin}, args...)...)...)
}

// ipsAs returns the userspace node's tunnel addresses, asked as the user.
func (n *node) ipsAs(t *testing.T) (string, string) {
	v4, err := n.warrenAs("ip", "-4", "--socket", n.sock)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := n.warrenAs("ip", "-6", "--socket", n.sock)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(v4), strings.TrimSpace(v6)
}

func (n *node) domain(t *testing.T) string {
	st, err := n.status()
	if err != nil {
		t.Fatal(err)
	}
	return st.Domain
}

// captureDuringPing: `warren debug capture`, run as the user, records the
// echo requests and replies of a `warren ping` to peer: the capture taps
// the packet device in userspace mode as in TUN mode.
func (n *node) captureDuringPing(t *testing.T, peer, peerIP string) {
	file := filepath.Join(n.dir, "inner.pcap")
	args := append([]string{"netns", "exec", n.ns.Name}, asUser(warrenBin, "debug", "capture", "--socket", n.sock, "-o", file, "--duration", "4s", peer)...)
	cmd := exec.Command("ip", args...)
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	wait.For(t, 5*time.Second, "capture header", func() bool {
		fi, err := os.Stat(file)
		return err == nil && fi.Size() >= 24
	})
	if out, err := n.warrenAs("ping", "--socket", n.sock, "-c", "2", "--interval", "200ms", peer); err != nil {
		t.Fatalf("ping %s: %v\n%s", peer, err, out)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("capture as %s: %v: %s", usUser, err, errb.String())
	}
	my, _ := n.ipsAs(t)
	var echo, reply int
	for _, p := range readPcap(t, file) {
		if len(p) < 28 || p[0]>>4 != 4 || p[9] != 1 {
			continue
		}
		src, dst := net.IP(p[12:16]).String(), net.IP(p[16:20]).String()
		switch {
		case p[20] == 8 && src == my && dst == peerIP:
			echo++
		case p[20] == 0 && src == peerIP && dst == my:
			reply++
		}
	}
	if echo < 2 || reply < 2 {
		t.Fatalf("capture: %d echo requests %s→%s, %d replies; want 2 each", echo, my, peerIP, reply)
	}
}

// TestUserspaceFileDrop: file drop both ways between a TUN node and a
// userspace node run as the unprivileged user (its daemon sends and
// receives through its netstack).
func TestUserspaceFileDrop(t *testing.T) {
	l := newLab(t, backends(t)[0].DSN(t))
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	a := l.startNode("a")
	u := l.startUserspaceNode(t, "u")
	if out, err := u.warrenAs("up", "--socket", u.sock, "--server", l.srv.url, "--auth-key", key, "--hostname", "u", "--timeout", "20s"); err != nil {
		t.Fatalf("up as %s: %v\n%s", usUser, err, out)
	}
	if _, err := a.up(key); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, []*node{a, u}, 1, 20*time.Second)
	uid, gid := lookupIDs(t)

	// TUN → userspace.
	src := filepath.Join(t.TempDir(), "to-u.bin")
	sum := genFile(t, src, 3<<20, 7)
	if out, err := warren(a.ns, "file", "cp", src, "u:", "--socket", a.sock); err != nil {
		t.Fatalf("file cp to the userspace node: %v\n%s", err, out)
	}
	inbox := filepath.Join(u.dir, "got")
	os.Mkdir(inbox, 0o755)
	os.Chown(inbox, uid, gid)
	got, err := u.warrenAs("file", "get", "--socket", u.sock, inbox)
	if err != nil {
		t.Fatalf("file get as %s: %v\n%s", usUser, err, got)
	}
	if p := strings.TrimSpace(got); p != filepath.Join(inbox, "to-u.bin") || sha256File(t, p) != sum {
		t.Fatalf("file get printed %q; missing or changed", got)
	}

	// Userspace → TUN, sent by the user.
	src = filepath.Join(u.dir, "to-a.bin")
	sum = genFile(t, src, 3<<20, 9)
	os.Chown(src, uid, gid)
	if out, err := u.warrenAs("file", "cp", "--socket", u.sock, src, "a:"); err != nil {
		t.Fatalf("file cp from the userspace node: %v\n%s", err, out)
	}
	out := t.TempDir()
	p := l.must(a.ns, "file", "get", "--socket", a.sock, out)
	if p != filepath.Join(out, "to-a.bin") || sha256File(t, p) != sum {
		t.Fatalf("file get on a printed %q; missing or changed", p)
	}
}

// TestUserspaceExitNode: a userspace node (as the user) using a TUN exit
// node reaches an internet host beyond it through its SOCKS5 proxy, by a
// name only the exit node's resolver knows (MagicDNS forwards to the exit
// node through the netstack).
func TestUserspaceExitNode(t *testing.T) {
	l := newLab(t, backends(t)[0].DSN(t))
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")

	inet := nettest.NewNS(t, "mrinet")
	inet.Run(t, "ip", "addr", "add", "198.19.20.1/32", "dev", "lo")
	testResolver(t, inet, "198.19.20.1", 53, map[string]string{"internet.test.": "198.19.20.1"})
	host := &node{ns: inet}
	host.serveHTTP(t, 8080, "hello from the internet")

	l.resolv = "nameserver 198.19.20.1\n" // the exit node's resolver
	e := l.startNode("exit1")
	l.resolv = ""
	nettest.Veth(t, e.ns, "inet0", []string{"198.19.10.1/24"}, inet, "e1", []string{"198.19.10.2/24"})
	e.ns.Run(t, "ip", "route", "add", "198.19.20.0/24", "via", "198.19.10.2")
	u := l.startUserspaceNode(t, "u")
	if _, err := e.upWith(key, "--advertise-exit-node"); err != nil {
		t.Fatal(err)
	}
	l.mustAdmin("routes", "approve", "exit1", "exit")
	if out, err := u.warrenAs("up", "--socket", u.sock, "--server", l.srv.url, "--auth-key", key, "--hostname", "u", "--timeout", "20s"); err != nil {
		t.Fatalf("up as %s: %v\n%s", usUser, err, out)
	}
	waitPeers(t, []*node{e, u}, 1, 20*time.Second)
	// Without an exit node the internet host is off the mesh.
	if out, err := u.curl("--socks5", "127.0.0.1:1055", "http://198.19.20.1:8080/"); err == nil {
		t.Fatalf("reached the internet host with no exit node: %q", out)
	}
	if out, err := u.warrenAs("up", "--socket", u.sock, "--exit-node", "exit1", "--timeout", "20s"); err != nil {
		t.Fatalf("up --exit-node as %s: %v\n%s", usUser, err, out)
	}
	var out string
	wait.For(t, 20*time.Second, "curl through SOCKS5 and the exit node", func() bool {
		o, err := u.curl("--socks5-hostname", "127.0.0.1:1055", "http://internet.test:8080/")
		out = o
		return err == nil
	})
	if out != "hello from the internet" {
		t.Fatalf("through the exit node: %q", out)
	}
}
