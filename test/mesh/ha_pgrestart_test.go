package mesh

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/store/storetest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// pgServer is a throwaway PostgreSQL cluster of the test's own
// (scripts/pg-test-server.sh), which the test may stop and start again
// without disturbing the suite's shared one.
type pgServer struct {
	t   *testing.T
	dir string
	dsn string
}

// pgScript is scripts/pg-test-server.sh, from test/mesh.
var pgScript = filepath.Join("..", "..", "scripts", "pg-test-server.sh")

// startOwnPostgres starts a cluster of the test's own and stops it (and
// removes its directory) at the end of the test. It skips the test when
// the PostgreSQL server binaries are absent, unless
// WARREN_REQUIRE_POSTGRES=1, which fails it.
func startOwnPostgres(t *testing.T) *pgServer {
	t.Helper()
	if bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(bins) == 0 {
		if os.Getenv(storetest.EnvRequirePostgres) == "1" {
			t.Fatalf("%s=1 but the PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)", storetest.EnvRequirePostgres)
		}
		t.Skip("needs the PostgreSQL server binaries (apt-get install postgresql)")
	}
	// Not under t.TempDir: the postgres user must reach the directory
	// (its unix socket is there), and TempDir's parents are private.
	p := &pgServer{t: t, dir: filepath.Join(os.TempDir(), fmt.Sprintf("warren-pg-%d-%x", os.Getpid(), rand.Uint32()))}
	out, err := exec.Command(pgScript, "start", p.dir).Output()
	if err != nil {
		t.Fatalf("starting PostgreSQL: %v: %s", err, stderrOf(err))
	}
	t.Cleanup(func() {
		if out, err := exec.Command(pgScript, "stop", p.dir).CombinedOutput(); err != nil {
			t.Errorf("stopping PostgreSQL: %v: %s", err, out)
		}
	})
	p.dsn = strings.TrimSpace(string(out))
	return p
}

// halt stops the server as an operator's restart does (fast shutdown:
// every session is ended); resume starts it again on the same port.
func (p *pgServer) halt()   { p.script("halt") }
func (p *pgServer) resume() { p.script("resume") }

func (p *pgServer) script(verb string) {
	p.t.Helper()
	if out, err := exec.Command(pgScript, verb, p.dir).CombinedOutput(); err != nil {
		p.t.Fatalf("pg-test-server.sh %s: %v: %s", verb, err, out)
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// readyz returns the HTTP status of a replica's /readyz (0: no answer).
func (r *haReplica) readyz() int {
	out, err := r.ns.Output("curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}", r.url+"/readyz")
	if err != nil {
		return 0
	}
	return atoi(strings.TrimSpace(out))
}

// seesName reports whether n's status names a node (itself or a peer) name.
func (n *node) seesName(name string) bool {
	st, err := n.status()
	if err != nil {
		return false
	}
	if st.Self != nil && st.Self.Name == name {
		return true
	}
	for _, p := range st.Peers {
		if p.Name == name {
			return true
		}
	}
	return false
}

// TestHAPostgresRestart: PostgreSQL itself restarted (fast shutdown, then
// started again) under two running replicas with a node streaming from
// each. While it is down an admin change fails promptly with an error
// naming the database, and is not applied later; both replicas report
// unready. Once it is back, the same replica processes (not restarted)
// report ready, a change made through replica A reaches the node
// streaming from replica B and one through B the node on A (their LISTEN
// connections are back), and the change made just before the stop is not
// lost.
func TestHAPostgresRestart(t *testing.T) {
	l := newLab(t, "") // first: it skips where network namespaces cannot be made
	pg := startOwnPostgres(t)
	l.db = pg.dsn
	reps := l.startReplicas(2)
	l.mustAdmin("users", "create", "ha")
	key := l.mustAdmin("authkeys", "create", "--user", "ha", "--reusable")
	var nodes []*node
	for i := range 2 {
		n := l.startNode(fmt.Sprintf("n%d", i))
		if out, err := warren(n.ns, "up", "--socket", n.sock, "--server", urlsFrom(reps, i), "--auth-key", key,
			"--hostname", n.name, "--timeout", "20s"); err != nil {
			t.Fatalf("up %s: %v\n%s", n.name, err, out)
		}
		nodes = append(nodes, n)
	}
	a0, _ := nodes[0].ips()
	wait.For(t, 20*time.Second, "n1 pings n0", func() bool { return nodes[1].pingOnce(a0, time.Second) == nil })
	for _, r := range reps {
		wait.For(t, 10*time.Second, "replica ready", func() bool { return r.readyz() == 200 })
	}
	adminVia := func(r *haReplica, args ...string) (string, error) {
		return warren(r.ns, append([]string{"admin", "--server", r.url, "--api-key", l.srv.apiKey, "--insecure"}, args...)...)
	}
	pids := []int{reps[0].cmd.Process.Pid, reps[1].cmd.Process.Pid}

	// A change just before the stop.
	if out, err := adminVia(reps[0], "nodes", "rename", "n0", "n0pre"); err != nil {
		t.Fatalf("rename before the stop: %v\n%s", err, out)
	}
	pg.halt()
	halted := time.Now()

	// A change while the database is down fails, promptly and clearly.
	start := time.Now()
	out, err := adminVia(reps[1], "nodes", "rename", "n1", "n1down")
	took := time.Since(start)
	out = strings.TrimSpace(out)
	if err == nil {
		t.Fatalf("a rename with the database down succeeded:\n%s", out)
	}
	t.Logf("rename while the database is down: %q after %v", out, took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("the failing rename took %v", took)
	}
	if !strings.Contains(out, "database is unreachable") || strings.Count(out, "\n") != 0 {
		t.Errorf("the failing rename's error does not say the database is unreachable in one line: %q", out)
	}
	for i, r := range reps {
		wait.For(t, 10*time.Second, fmt.Sprintf("replica %d unready", i), func() bool { return r.readyz() == 503 })
	}
	// Down for longer than a replica's heartbeat lapse (5 s), as a real
	// restart may be; the tunnel carries pings meanwhile.
	for time.Since(halted) < 6*time.Second {
		wait.For(t, 5*time.Second, "n1 pings n0 while the database is down", func() bool { return nodes[1].pingOnce(a0, time.Second) == nil })
		time.Sleep(500 * time.Millisecond)
	}

	pg.resume()
	t.Logf("PostgreSQL down for %v", time.Since(halted).Round(time.Millisecond))
	for i, r := range reps {
		wait.For(t, 15*time.Second, fmt.Sprintf("replica %d ready again", i), func() bool { return r.readyz() == 200 })
		if r.cmd.ProcessState != nil || r.cmd.Process.Pid != pids[i] {
			t.Fatalf("replica %d exited or restarted", i)
		}
	}
	for _, n := range nodes {
		wait.For(t, 10*time.Second, n.name+" sees the rename made just before the stop", func() bool { return n.seesName("n0pre") })
	}

	for i, n := range nodes {
		wait.For(t, 15*time.Second, n.name+" sees its peer online", func() bool {
			st, err := n.status()
			return err == nil && len(st.Peers) == 1 && st.Peers[0].Online && st.Connected && i >= 0
		})
	}

	// After the restart: A's change reaches n1 (streaming from B), B's
	// change reaches n0 (streaming from A).
	if out, err := adminVia(reps[0], "nodes", "rename", "n0pre", "n0post"); err != nil {
		t.Fatalf("rename through A after the restart: %v\n%s", err, out)
	}
	renamed := time.Now()
	wait.For(t, 10*time.Second, "n1 (on B) sees A's rename", func() bool { return nodes[1].seesName("n0post") })
	viaListen := time.Since(renamed)
	if out, err := adminVia(reps[1], "nodes", "rename", "n1", "n1post"); err != nil {
		t.Fatalf("rename through B after the restart: %v\n%s", err, out)
	}
	wait.For(t, 10*time.Second, "n0 (on A) sees B's rename", func() bool { return nodes[0].seesName("n1post") })
	t.Logf("A's rename after the restart seen by B's node after %v", viaListen.Round(time.Millisecond))
	// The replicas poll the log every 10 s: a change seen sooner came by
	// NOTIFY, so the LISTEN connection is back.
	if viaListen > 5*time.Second {
		t.Errorf("A's rename reached B's node after %v: B's LISTEN connection is not back", viaListen)
	}
	if nodes[0].seesName("n1down") || nodes[1].seesName("n1down") {
		t.Fatal("the rename refused while the database was down was applied later")
	}
	wait.For(t, 10*time.Second, "n1 pings n0 after the restart", func() bool { return nodes[1].pingOnce(a0, time.Second) == nil })
}
