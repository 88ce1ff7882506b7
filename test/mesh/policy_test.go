package mesh

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// policyDB: group:eng (alice) may reach tag:db on TCP 5432 only.
const policyDB = `{
	// engineers reach the databases, on 5432 only
	"groups": {"group:eng": ["alice@"]},
	"tagOwners": {"tag:db": ["alice@"]},
	"acls": [
		{"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"], "proto": "tcp"},
	],
	"tests": [
		{"src": "alice@", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]},
		{"src": "tag:db", "deny": ["alice@:22", "alice@:5432"]},
	],
}
`

// TestPolicy is issue #8's access-policy story on each store: a policy
// whose tests fail is refused with the failing case's line and column; with
// "group A may reach tag:db on 5432 only", A connects to 5432 (IPv4 and
// IPv6, so replies flow back through A's own filter, which allows nothing
// in), is refused on 22, tag:db cannot initiate to A, the drops are
// counted; a policy change reaches every node within 2 s; removing the
// policy opens everything again.
func TestPolicy(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.Name, func(t *testing.T) { testPolicy(t, b.DSN(t)) })
	}
}

// listen opens TCP listeners on the given ports in n's namespace, accepting
// (and closing) connections until the test ends.
func (n *node) listen(t *testing.T, ports ...int) {
	for _, p := range ports {
		var ln net.Listener
		if err := n.ns.Do(func() (err error) { ln, err = net.Listen("tcp", ":"+strconv.Itoa(p)); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
}

// dial reports whether a TCP connection from n to addr:port is set up
// within wait.
func (n *node) dial(addr string, port int, wait time.Duration) bool {
	err := n.ns.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), wait)
		if err == nil {
			c.Close()
		}
		return err
	})
	return err == nil
}

func (n *node) policyDrops(t *testing.T) int {
	out := n.l.must(n.ns, "metrics", "--socket", n.sock)
	m := regexp.MustCompile(`(?m)^warren_drops_total\{reason="policy"\} (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no policy drop counter in:\n%s", out)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

func testPolicy(t *testing.T, db string) {
	l := newLab(t, db)
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Tags need a policy that lets the user use them.
	if out, err := l.admin("authkeys", "create", "--user", "alice", "--tags", "tag:db"); err == nil || !strings.Contains(out, "no policy is set") {
		t.Fatalf("tagged key without a policy: %v\n%s", err, out)
	}
	// A policy whose tests fail is refused, naming the case.
	bad := write("bad.hujson", strings.Replace(policyDB, `"deny": ["tag:db:22"]`, `"deny": ["tag:db:5432"]`, 1))
	for _, verb := range []string{"check", "set"} {
		out, err := l.admin("policy", verb, bad)
		if err == nil || !strings.Contains(out, "line 9, column 57: test failed: tcp from alice@ to tag:db:5432 is accepted, the test expects it denied") {
			t.Fatalf("policy %s of a failing policy: %v\n%s", verb, err, out)
		}
	}
	if got := l.mustAdmin("policy", "get"); got != "" {
		t.Fatalf("a refused policy was stored:\n%s", got)
	}
	good := write("good.hujson", policyDB)
	if out := l.mustAdmin("policy", "check", good); out != "policy OK (2 tests passed)" {
		t.Fatalf("policy check: %q", out)
	}
	l.mustAdmin("policy", "set", good)
	if got := l.mustAdmin("policy", "get"); got+"\n" != policyDB {
		t.Fatalf("policy get:\n%s", got)
	}

	userKey := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	dbKey := l.mustAdmin("authkeys", "create", "--user", "alice", "--tags", "tag:db")
	laptop, dbn := l.startNode("laptop"), l.startNode("db")
	parallel(t, []*node{laptop, dbn}, func(n *node) error {
		key := userKey
		if n == dbn {
			key = dbKey
		}
		_, err := n.up(key)
		return err
	})
	waitPeers(t, []*node{laptop, dbn}, 1, 10*time.Second)
	laptop.listen(t, 22, 5432)
	dbn.listen(t, 22, 5432)
	lv4, lv6 := laptop.ips()
	dv4, dv6 := dbn.ips()

	// A reaches tag:db on 5432, over IPv4 and IPv6: the replies come back
	// through A's filter, which lets nothing else in.
	wait.For(t, 10*time.Second, "laptop → db:5432", func() bool { return laptop.dial(dv4, 5432, 500*time.Millisecond) })
	if !laptop.dial(dv6, 5432, 2*time.Second) {
		t.Fatal("laptop cannot reach db:5432 over IPv6")
	}
	drops := dbn.policyDrops(t)
	for _, a := range []string{dv4, dv6} {
		if laptop.dial(a, 22, time.Second) {
			t.Fatalf("laptop reached db %s:22", a)
		}
	}
	if got := dbn.policyDrops(t); got <= drops {
		t.Fatalf("db's policy drops %d → %d", drops, got)
	}
	// tag:db cannot initiate to A, not even on the port A may use.
	drops = laptop.policyDrops(t)
	for _, p := range []int{22, 5432} {
		if dbn.dial(lv4, p, time.Second) || dbn.dial(lv6, p, 500*time.Millisecond) {
			t.Fatalf("db reached laptop:%d", p)
		}
	}
	if err := dbn.pingOnce(lv4, 500*time.Millisecond); err == nil {
		t.Fatal("db pinged laptop")
	}
	if got := laptop.policyDrops(t); got <= drops {
		t.Fatalf("laptop's policy drops %d → %d", drops, got)
	}

	// A policy change reaches every node within 2 s: now tag:db may reach
	// A on 22, and A no longer reaches 5432.
	swapped := write("swapped.hujson", `{
	"tagOwners": {"tag:db": ["alice@"]},
	"acls": [{"action": "accept", "src": ["tag:db"], "dst": ["alice@:22"]}],
	"tests": [{"src": "tag:db", "accept": ["alice@:22"]}, {"src": "alice@", "deny": ["tag:db:5432"]}],
}`)
	l.mustAdmin("policy", "set", swapped)
	set := time.Now()
	deadline := 2 * time.Second
	if !wait.Poll(deadline, func() bool { return dbn.dial(lv4, 22, 200*time.Millisecond) }) {
		t.Fatalf("db cannot reach laptop:22 %v after the policy change", deadline)
	}
	if !wait.Poll(deadline-time.Since(set), func() bool { return !laptop.dial(dv4, 5432, 200*time.Millisecond) }) {
		t.Fatalf("laptop still reaches db:5432 %v after the policy change", deadline)
	}
	t.Logf("policy change in force on both nodes %v after `policy set` returned", time.Since(set).Round(time.Millisecond))

	// No policy: everything passes again.
	l.mustAdmin("policy", "delete")
	wait.For(t, 2*time.Second, "laptop → db:22 with no policy", func() bool { return laptop.dial(dv4, 22, 200*time.Millisecond) })
	if err := dbn.pingOnce(lv6, time.Second); err != nil {
		t.Fatalf("no policy, db cannot ping laptop: %v", err)
	}
}
