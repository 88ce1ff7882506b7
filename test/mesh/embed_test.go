package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
	wnode "github.com/warrenmesh/warren/node"
)

// Embedded nodes (package node) with TUN nodes. An embedded node's
// sockets (UDP, control, relay) are opened by its goroutines on whatever
// thread they run, so the process that holds it must itself live in the
// lab: TestEmbeddedWithTUN runs this test binary again inside a namespace
// of its own (forked from a thread switched into it), where
// TestEmbeddedWithTUNInNS puts that namespace behind the lab's router.

const (
	envEmbedNS = "WARREN_MESH_EMBED_NS" // the namespace the re-executed binary runs in
	envMeshBin = "WARREN_MESH_BIN"      // the warren binary the parent built
)

func TestEmbeddedWithTUN(t *testing.T) {
	if os.Getenv(envEmbedNS) != "" {
		t.Skip("this is the re-executed binary")
	}
	nettest.NeedNetns(t)
	ns := nettest.NewNS(t, "memb")
	cmd := exec.Command(os.Args[0], "-test.run", "^TestEmbeddedWithTUNInNS$", "-test.v", "-test.count=1", "-test.timeout=8m")
	cmd.Env = append(os.Environ(), envEmbedNS+"="+ns.Name, envMeshBin+"="+warrenBin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	t.Log(out.String())
	if err != nil || !strings.Contains(out.String(), "--- PASS: TestEmbeddedWithTUNInNS") {
		t.Fatalf("TestEmbeddedWithTUNInNS in namespace %s: %v", ns.Name, err)
	}
}

// startEmbedded brings up an embedded node in this process.
func startEmbedded(t *testing.T, dir, url, key, name string) *wnode.Node {
	t.Helper()
	log, rec := logtest.New()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, rec.Text())
		}
	})
	n, err := wnode.New(wnode.Options{Dir: dir, ServerURL: url, AuthKey: key, Hostname: name, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := n.Up(ctx); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// serveCaller answers HTTP on ln with "NAME USER" of the calling node
// (WhoIs), until the test ends; no keep-alive, so nothing of it stays.
func serveCaller(t *testing.T, n *wnode.Node, ln net.Listener) {
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := n.WhoIs(r.Context(), r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Fprintf(w, "%s %s", who.Name, who.User)
	})}
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// serveOnce serves body over HTTP on port of n's namespace (a host
// socket there), without keep-alive.
func serveNoKeepAlive(t *testing.T, n *node, port int, body string) {
	var ln net.Listener
	if err := n.ns.Do(func() (err error) { ln, err = net.Listen("tcp", ":"+strconv.Itoa(port)); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }), ReadHeaderTimeout: 5 * time.Second}
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// fetch gets url through the embedded node's HTTP client.
func fetch(n *wnode.Node, url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := n.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

const policyEmbedded = `{
  "acls": [
    {"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]},
    {"action": "accept", "src": ["bob@"], "dst": ["alice@:8080"]},
  ],
}`

// TestEmbeddedWithTUNInNS: two embedded nodes in this process (alpha of
// alice, beta of bob) and a TUN node (tun1 of alice, a real `warren
// daemon`): each embedded node listens and the TUN node's kernel
// connects to it by address and by the MagicDNS name its resolver gives; the embedded nodes reach the TUN node's
// service and each other by MagicDNS name; WhoIs names the calling node
// and its user every time; the policy applies in every direction; bad
// input fails at once with its reason; alpha comes back from its state
// directory; and closing the nodes leaves no goroutine behind.
func TestEmbeddedWithTUNInNS(t *testing.T) {
	self := os.Getenv(envEmbedNS)
	if self == "" {
		t.Skip("run by TestEmbeddedWithTUN inside a namespace")
	}
	l := newLab(t, backends(t)[0].DSN(t))
	for _, tool := range []string{"curl", "dig"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (scripts/install-deps.sh)", tool)
		}
	}
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	l.mustAdmin("users", "create", "bob")
	aliceKey := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	bobKey := l.mustAdmin("authkeys", "create", "--user", "bob")
	l.attachNS(&nettest.NS{Name: self})

	tun := l.startNode("tun1")
	if out, err := tun.up(aliceKey); err != nil {
		t.Fatalf("tun1 up: %v\n%s", err, out)
	}
	serveNoKeepAlive(t, tun, 80, "hello from tun1")
	before := runtime.NumGoroutine()

	dir := t.TempDir()
	alphaDir := filepath.Join(dir, "alpha")
	alpha := startEmbedded(t, alphaDir, l.srv.url, aliceKey, "alpha")
	beta := startEmbedded(t, filepath.Join(dir, "beta"), l.srv.url, bobKey, "beta")
	waitPeers(t, []*node{tun}, 2, 30*time.Second)
	for _, n := range []*wnode.Node{alpha, beta} {
		wait.For(t, 30*time.Second, "the embedded nodes' peers", func() bool {
			st, err := n.Status(context.Background())
			return err == nil && len(st.Peers) == 2
		})
	}
	la, err := alpha.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	serveCaller(t, alpha, la)
	lb, err := beta.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	serveCaller(t, beta, lb)
	curl := func(args ...string) (string, error) {
		return tun.ns.Output(append([]string{"curl", "-sS", "--fail", "-g", "--max-time", "8"}, args...)...)
	}
	addr := func(n *wnode.Node, v6 bool) string {
		for _, a := range n.Addrs() {
			if a.Is6() == v6 {
				return a.String()
			}
		}
		t.Fatalf("no address (v6 %v) in %v", v6, n.Addrs())
		return ""
	}

	// The TUN node's kernel reaches both embedded nodes, IPv4 and IPv6;
	// they tell who called.
	wait.For(t, 30*time.Second, "tun1 reaches alpha", func() bool {
		out, err := curl("http://" + addr(alpha, false) + ":8080/")
		return err == nil && out == "tun1 alice"
	})
	for url, want := range map[string]string{
		"http://" + addr(beta, false) + ":8080/":      "tun1 alice",
		"http://[" + addr(alpha, true) + "]:8080/":    "tun1 alice",
		"http://[" + addr(beta, true) + "]:8080/":     "tun1 alice",
		"http://" + addr(alpha, false) + ":8080/who/": "tun1 alice",
	} {
		if out, err := curl(url); err != nil || out != want {
			t.Errorf("tun1: curl %s: %q %v, want %q", url, out, err, want)
		}
	}
	// And by MagicDNS name: the TUN node's resolver knows them.
	domain := tun.domain(t)
	for _, name := range []string{"alpha", "beta"} {
		out, err := tun.ns.Output("dig", "+short", "+time=2", "+tries=3", "@100.100.100.100", name+"."+domain, "A")
		ip := strings.TrimSpace(out)
		if err != nil || net.ParseIP(ip) == nil {
			t.Fatalf("tun1: dig %s.%s: %q %v", name, domain, out, err)
		}
		if out, err := curl("--resolve", name+"."+domain+":8080:"+ip, "http://"+name+"."+domain+":8080/"); err != nil || out != "tun1 alice" {
			t.Errorf("tun1: curl http://%s.%s:8080/: %q %v", name, domain, out, err)
		}
	}
	// The embedded nodes reach the TUN node and each other by name.
	for _, tc := range []struct {
		from      *wnode.Node
		url, want string
		fromName  string
	}{
		{alpha, "http://tun1/", "hello from tun1", "alpha"},
		{beta, "http://tun1/", "hello from tun1", "beta"},
		{alpha, "http://beta:8080/", "alpha alice", "alpha"},
		{beta, "http://alpha:8080/", "beta bob", "beta"},
	} {
		if out, err := fetch(tc.from, tc.url, 20*time.Second); err != nil || out != tc.want {
			t.Errorf("%s: GET %s: %q %v, want %q", tc.fromName, tc.url, out, err, tc.want)
		}
	}
	// WhoIs of the TUN node by address, as a program would look it up.
	tv4, _ := tun.ips()
	if who, err := alpha.WhoIs(context.Background(), tv4+":1234"); err != nil || who.Name != "tun1" || who.User != "alice" {
		t.Errorf("WhoIs(tun1): %+v %v", who, err)
	}

	// Bad input.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := alpha.Dial(ctx, "tcp", "nosuchnode:80"); !errors.Is(err, wnode.ErrNoSuchName) {
		t.Errorf("dial an unknown name: %v", err)
	}
	if _, err := alpha.Dial(ctx, "tcp", "tun1:9"); err == nil || !strings.Contains(err.Error(), "refused") || ctx.Err() != nil {
		t.Errorf("dial a refused port of tun1: %v", err)
	}
	if _, err := alpha.Listen("tcp", tv4+":80"); err == nil || !strings.Contains(err.Error(), "not one of the node's tunnel addresses") {
		t.Errorf("listen on tun1's address: %v", err)
	}

	// The policy: alice's nodes reach each other; bob's reach alice's
	// only on 8080; nothing reaches bob's.
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	os.WriteFile(pol, []byte(policyEmbedded), 0o644)
	l.mustAdmin("policy", "set", pol)
	wait.For(t, 30*time.Second, "beta refused by tun1's policy", func() bool {
		_, err := fetch(beta, "http://tun1/", 2*time.Second)
		return err != nil
	})
	for _, tc := range []struct {
		from *wnode.Node
		name string
		url  string
		ok   bool
	}{
		{alpha, "alpha", "http://tun1/", true},
		{beta, "beta", "http://alpha:8080/", true},
		{alpha, "alpha", "http://beta:8080/", false},
	} {
		out, err := fetch(tc.from, tc.url, 3*time.Second)
		if (err == nil) != tc.ok {
			t.Errorf("with the policy, %s GET %s: %q %v (want allowed: %v)", tc.name, tc.url, out, err, tc.ok)
		}
	}
	if out, err := tun.ns.Output("curl", "-sS", "--fail", "--max-time", "3", "http://"+addr(beta, false)+":8080/"); err == nil {
		t.Errorf("with the policy, tun1 reached bob's beta: %q", out)
	}
	if out, err := curl("http://" + addr(alpha, false) + ":8080/"); err != nil || out != "tun1 alice" {
		t.Errorf("with the policy, tun1 to alpha: %q %v", out, err)
	}

	// alpha comes back from its state directory: same addresses, no key.
	a4 := addr(alpha, false)
	if err := alpha.Close(); err != nil {
		t.Fatal(err)
	}
	alpha = startEmbedded(t, alphaDir, "", "", "alpha")
	if got := addr(alpha, false); got != a4 {
		t.Errorf("alpha came back as %s, was %s", got, a4)
	}
	la, err = alpha.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	serveCaller(t, alpha, la)
	wait.For(t, 30*time.Second, "tun1 reaches alpha again", func() bool {
		out, err := curl("http://" + a4 + ":8080/")
		return err == nil && out == "tun1 alice"
	})

	alpha.Close()
	beta.Close()
	if !wait.Poll(15*time.Second, func() bool { return runtime.NumGoroutine() <= before }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
	}
}

// TestEmbeddedExample builds examples/hello and runs it in a namespace of
// the lab; a TUN node finds it by MagicDNS name (its resolver at
// 100.100.100.100) and fetches its page, which greets it by name. A
// request for another host name (DNS rebinding) is refused.
func TestEmbeddedExample(t *testing.T) {
	if os.Getenv(envEmbedNS) != "" {
		t.Skip("this is the re-executed binary")
	}
	l := newLab(t, backends(t)[0].DSN(t))
	for _, tool := range []string{"curl", "dig"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (scripts/install-deps.sh)", tool)
		}
	}
	bin := filepath.Join(t.TempDir(), "hello")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/warrenmesh/warren/examples/hello").CombinedOutput(); err != nil {
		t.Fatalf("go build examples/hello: %v\n%s", err, out)
	}
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")

	ns, _ := l.attach("mex")
	t.Setenv("WARREN_AUTH_KEY", key) // inherited by the example, not on its command line
	ns.Start(t, bin, "-server", l.srv.url, "-dir", filepath.Join(t.TempDir(), "hello"), "-hostname", "hello")
	os.Unsetenv("WARREN_AUTH_KEY")
	tun := l.startNode("tun1")
	if out, err := tun.up(key); err != nil {
		t.Fatalf("tun1 up: %v\n%s", err, out)
	}
	waitPeers(t, []*node{tun}, 1, 60*time.Second)
	domain := tun.domain(t)
	var ip string
	wait.For(t, 20*time.Second, "hello in MagicDNS", func() bool {
		out, err := tun.ns.Output("dig", "+short", "+time=2", "+tries=1", "@100.100.100.100", "hello."+domain, "A")
		ip = strings.TrimSpace(out)
		return err == nil && net.ParseIP(ip) != nil
	})
	var page string
	wait.For(t, 30*time.Second, "the page from hello", func() bool {
		out, err := tun.ns.Output("curl", "-sS", "--fail", "--max-time", "5", "--resolve", "hello:80:"+ip, "http://hello/")
		page = out
		return err == nil
	})
	if page != "Hello, tun1 (alice)!\n" {
		t.Errorf("page %q", page)
	}
	out, err := tun.ns.Output("curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: rebound.example", "http://"+ip+"/")
	if err != nil || out != "421" {
		t.Errorf("a request for another host: %q %v, want 421", out, err)
	}
	// The page is on the mesh only: the example's namespace has no
	// socket on port 80.
	if out, err := ns.Output("bash", "-c", "ss -Htln 'sport = :80'"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("a host socket on :80 in the example's namespace: %q %v", out, err)
	}
}
