package mesh

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestMesh is the mesh's end-to-end story, on each store: four nodes join
// with one reusable key and every pair pings both ways over IPv4 and IPv6;
// a fifth joins (with a one-off key) and everyone reaches it within 2 s; the
// one-off key is refused the second time; a node is deleted and is
// unreachable within 2 s; the server is killed with SIGKILL and tunnels keep
// working; restarted on the same store, nodes reconnect and a new node
// reaches everyone.
func TestMesh(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.Name, func(t *testing.T) { testMesh(t, b.DSN(t)) })
	}
}

func testMesh(t *testing.T, db string) {
	l := newLab(t, db)
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	reusable := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	if !strings.HasPrefix(reusable, "wkey_") {
		t.Fatalf("authkeys create printed %q, want only the key", reusable)
	}

	var nodes []*node
	for i := 1; i <= 4; i++ {
		nodes = append(nodes, l.startNode(fmt.Sprintf("node%d", i)))
	}
	parallel(t, nodes, func(n *node) error {
		out, err := n.up(reusable)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "warren is up: "+n.name+".") {
			return fmt.Errorf("up printed %q", out)
		}
		return nil
	})
	waitPeers(t, nodes, 3, 10*time.Second)
	pingAll(t, nodes)

	// A peer-to-peer check of the CLI ping and status as users see them.
	v4, _ := nodes[1].ips()
	out := l.must(nodes[0].ns, "ping", "--socket", nodes[0].sock, "-c", "2", "--interval", "200ms", "node2")
	if !strings.Contains(out, "pong from node2 ("+v4+") via direct 198.18.") || !strings.Contains(out, "2 received") {
		t.Errorf("warren ping output:\n%s", out)
	}
	st := l.must(nodes[0].ns, "status", "--socket", nodes[0].sock)
	for _, want := range []string{"node1", "self", "node4", "online", "direct 198.18."} {
		if !strings.Contains(st, want) {
			t.Errorf("warren status lacks %q:\n%s", want, st)
		}
	}

	// A fifth node, with a one-off key: everyone reaches it within 2 s of
	// its `up` returning (which waits for its own map).
	oneOff := l.mustAdmin("authkeys", "create", "--user", "alice")
	n5 := l.startNode("node5")
	if _, err := n5.up(oneOff); err != nil {
		t.Fatal(err)
	}
	joined := time.Now()
	v4, v6 := n5.ips()
	parallel(t, nodes, func(n *node) error {
		if !wait.Poll(2*time.Second-time.Since(joined), func() bool { return n.pingOnce(v4, 300*time.Millisecond) == nil }) {
			return fmt.Errorf("%s cannot reach node5 %s within 2 s", n.name, v4)
		}
		return n.pingOnce(v6, time.Second)
	})
	t.Logf("node5 reachable from all 4 nodes %v after joining", time.Since(joined).Round(time.Millisecond))

	// The one-off key again: a clear refusal, and nothing stored.
	n6 := l.startNode("node6")
	out, err := n6.up(oneOff)
	if err == nil || !strings.Contains(err.Error(), "already been used") {
		t.Fatalf("second use of a one-off key: err %v, out %q", err, out)
	}
	if list := l.mustAdmin("nodes", "list"); strings.Contains(list, "node6") {
		t.Fatalf("refused node stored:\n%s", list)
	}

	// Delete node2: unreachable from the others within 2 s.
	v4, v6 = nodes[1].ips()
	l.mustAdmin("nodes", "delete", "node2")
	deleted := time.Now()
	others := []*node{nodes[0], nodes[2], nodes[3], n5}
	parallel(t, others, func(n *node) error {
		if !wait.Poll(2*time.Second-time.Since(deleted), func() bool { return n.pingOnce(v4, 200*time.Millisecond) != nil }) {
			return fmt.Errorf("%s still reaches deleted node2 after 2 s", n.name)
		}
		return nil
	})
	wait.For(t, 5*time.Second, "node2 logged out after deletion", func() bool {
		st, err := nodes[1].status()
		return err == nil && st.BackendState == "NeedsLogin"
	})
	if nodes[0].pingOnce(v6, 300*time.Millisecond) == nil {
		t.Error("deleted node2 still reachable over IPv6")
	}

	// Kill the server: tunnels keep working on the last map.
	l.killServer()
	pingAll(t, others)
	// Restart it on the same store: nodes reconnect, and a change (a new
	// node) reaches them.
	l.runServer()
	wait.For(t, 20*time.Second, "nodes reconnected", func() bool {
		for _, n := range others {
			if st, err := n.status(); err != nil || !st.Connected {
				return false
			}
		}
		return true
	})
	if _, err := n6.up(reusable); err != nil {
		t.Fatal(err)
	}
	v4, _ = n6.ips()
	parallel(t, others, func(n *node) error {
		if !wait.Poll(5*time.Second, func() bool { return n.pingOnce(v4, 300*time.Millisecond) == nil }) {
			return fmt.Errorf("%s cannot reach node6 after the server restart", n.name)
		}
		return nil
	})
}

// parallel runs f for every node at once and fails on any error.
func parallel(t *testing.T, nodes []*node, f func(n *node) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(n)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", nodes[i].name, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func waitPeers(t *testing.T, nodes []*node, want int, timeout time.Duration) {
	t.Helper()
	parallel(t, nodes, func(n *node) error {
		var last string
		if !wait.Poll(timeout, func() bool {
			st, err := n.status()
			if err != nil {
				last = err.Error()
				return false
			}
			last = fmt.Sprintf("%d peers, state %s", len(st.Peers), st.BackendState)
			return len(st.Peers) == want && st.BackendState == "Running"
		}) {
			return fmt.Errorf("want %d peers: %s", want, last)
		}
		return nil
	})
}

// pingAll pings every ordered pair over IPv4 and IPv6.
func pingAll(t *testing.T, nodes []*node) {
	t.Helper()
	type addrs struct{ v4, v6 string }
	ips := map[*node]addrs{}
	for _, n := range nodes {
		v4, v6 := n.ips()
		ips[n] = addrs{v4, v6}
	}
	parallel(t, nodes, func(n *node) error {
		for _, o := range nodes {
			if o == n {
				continue
			}
			for _, a := range []string{ips[o].v4, ips[o].v6} {
				// The first packet may wait for a handshake, and on a loaded
				// machine for its retry (WireGuard retries after 5 s).
				if !wait.Poll(12*time.Second, func() bool { return n.pingOnce(a, time.Second) == nil }) {
					return fmt.Errorf("cannot ping %s (%s)", o.name, a)
				}
			}
		}
		return nil
	})
}

// TestJoinRefusals: every way a join can be refused gives a one-line error
// naming the problem, and nothing is stored.
func TestJoinRefusals(t *testing.T) {
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	l.mustAdmin("users", "create", "bob")
	expired := l.mustAdmin("authkeys", "create", "--user", "bob", "--expiration", "1s")
	n := l.startNode("lonely")
	time.Sleep(1100 * time.Millisecond)

	otherKey := strings.TrimSpace(l.must(n.ns, "genkey"))
	wrongServerKey := l.mustPipe(n.ns, otherKey, "pubkey")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown auth key", []string{"--auth-key", "wkey_0123456789abcdef_nottherealsecretatall"}, "unknown or invalid auth key"},
		{"malformed auth key", []string{"--auth-key", "hello"}, "unknown or invalid auth key"},
		{"expired auth key", []string{"--auth-key", expired}, "expired"},
		{"wrong server key", []string{"--auth-key", expired, "--server-key", wrongServerKey}, "refused"},
		{"bad server URL", []string{"--auth-key", expired, "--server", "ftp://x"}, "--server"},
		{"no auth key", nil, "not registered"},
	}
	for _, c := range cases {
		args := append([]string{"up", "--socket", n.sock, "--server", l.srv.url, "--timeout", "5s"}, c.args...)
		out, err := warren(n.ns, args...)
		if err == nil {
			t.Errorf("%s: up succeeded: %s", c.name, out)
			continue
		}
		msg := strings.TrimSpace(out)
		t.Logf("%s: %s", c.name, msg)
		if !strings.Contains(msg, c.want) || strings.Count(msg, "\n") > 0 {
			t.Errorf("%s: want one line containing %q, got:\n%s", c.name, c.want, msg)
		}
	}
	if list := l.mustAdmin("nodes", "list", "--json"); strings.Contains(list, "lonely") {
		t.Fatalf("a refused node was stored:\n%s", list)
	}
	st, err := n.status()
	if err != nil || st.BackendState != "NeedsLogin" {
		t.Fatalf("after refusals: %v %+v", err, st)
	}
}

// TestJoinPinsServerKey: the first `up` over plain http pins the key the
// server sent and says so: it prints the key (to compare with `warren
// server key` on the server) and warns on stderr that it came over plain
// http, suggesting --server-key. Joining with --server-key gives no warning.
func TestJoinPinsServerKey(t *testing.T) {
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	serverKey := l.must(l.srv.ns, "server", "key", "--data-dir", l.srv.dir)
	l.mustAdmin("users", "create", "carol")
	key := l.mustAdmin("authkeys", "create", "--user", "carol", "--reusable")
	up := func(n *node, extra ...string) (stdout, stderr string) {
		t.Helper()
		args := append([]string{"netns", "exec", n.ns.Name, warrenBin, "up", "--socket", n.sock, "--server", l.srv.url,
			"--auth-key", key, "--hostname", n.name, "--timeout", "20s"}, extra...)
		cmd := exec.Command("ip", args...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("up %s: %v\n%s%s", n.name, err, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	a := l.startNode("a")
	out, errb := up(a)
	if !strings.Contains(out, serverKey) {
		t.Errorf("first up does not print the server key %s it pinned:\n%s", serverKey, out)
	}
	if !strings.Contains(errb, "plain http") || !strings.Contains(errb, "--server-key") || strings.Count(errb, "\n") != 1 {
		t.Errorf("first up over plain http: want one warning line naming --server-key on stderr, got %q", errb)
	}
	b := l.startNode("b")
	if out, errb := up(b, "--server-key", serverKey); errb != "" || !strings.Contains(out, "warren is up") {
		t.Errorf("up with --server-key: stdout %q, stderr %q; want no warning", out, errb)
	}
}
