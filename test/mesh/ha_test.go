package mesh

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/store/storetest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// haReplica is one `warren server` process of a replicated control plane.
type haReplica struct {
	ns  *nettest.NS
	dir string
	url string
	cmd *exec.Cmd
}

// startReplicas starts n `warren server` processes on the lab's
// PostgreSQL database, each in its own namespace, all with the first
// one's server key file (docs/HA.md); the lab's server is the first.
// extra are more flags for every replica.
func (l *lab) startReplicas(n int, extra ...string) []*haReplica {
	l.t.Helper()
	l.startServer(extra...)
	reps := []*haReplica{{ns: l.srv.ns, dir: l.srv.dir, url: l.srv.url, cmd: l.srv.cmd}}
	key, err := os.ReadFile(filepath.Join(l.srv.dir, "server.key"))
	if err != nil {
		l.t.Fatal(err)
	}
	for range n - 1 {
		ns, addr := l.attach("mha")
		r := &haReplica{ns: ns, dir: l.t.TempDir(), url: "http://" + addr + ":8080"}
		if err := os.WriteFile(filepath.Join(r.dir, "server.key"), key, 0o600); err != nil {
			l.t.Fatal(err)
		}
		r.cmd = ns.Start(l.t, warrenBin, append([]string{"server", "--listen", addr + ":8080", "--data-dir", r.dir, "--db", l.db}, extra...)...)
		wait.For(l.t, 15*time.Second, "replica listening", func() bool {
			_, err := ns.Output("bash", "-c", "exec 3<>/dev/tcp/"+addr+"/8080")
			return err == nil
		})
		reps = append(reps, r)
	}
	return reps
}

// urlsFrom lists the replicas' URLs starting at the i-th.
func urlsFrom(reps []*haReplica, i int) string {
	var us []string
	for j := range reps {
		us = append(us, reps[(i+j)%len(reps)].url)
	}
	return strings.Join(us, ",")
}

// nodeReplicas maps each online node's hostname to the pid in its
// replica's name (hostname-pid-random).
func nodeReplicas(t *testing.T, db *sql.DB) map[string]int {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), "SELECT hostname, replica FROM nodes WHERE online")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var host, rep string
		if err := rows.Scan(&host, &rep); err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(rep, "-")
		if len(parts) >= 3 {
			out[host], _ = strconv.Atoi(parts[len(parts)-2])
		}
	}
	return out
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// TestHAReplicas: three `warren server` replicas on one PostgreSQL, six
// nodes spread over them (each given every replica's URL, its own first),
// pinging each other. kill -9 of the replica serving two nodes: they
// reconnect to another replica within 5 s, their tunnels carry pings
// throughout, and a change made through a surviving replica right after
// reaches all six nodes within 1 s; a node joined through one replica is
// reachable from the nodes of another.
func TestHAReplicas(t *testing.T) {
	pg := os.Getenv(storetest.EnvPostgres)
	if pg == "" {
		if os.Getenv(storetest.EnvRequirePostgres) == "1" {
			t.Fatalf("%s unset", storetest.EnvPostgres)
		}
		t.Skip("replicas need PostgreSQL")
	}
	backends(t) // checks the DSN reaches the server over a unix socket
	dsn := storetest.Schema(t, pg)
	l := newLab(t, dsn)
	reps := l.startReplicas(3)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l.mustAdmin("users", "create", "ha")
	key := l.mustAdmin("authkeys", "create", "--user", "ha", "--reusable")
	var nodes []*node
	for i := range 6 {
		n := l.startNode(fmt.Sprintf("n%d", i))
		if out, err := warren(n.ns, "up", "--socket", n.sock, "--server", urlsFrom(reps, i%3), "--auth-key", key,
			"--hostname", n.name, "--timeout", "20s"); err != nil {
			t.Fatalf("up %s: %v\n%s", n.name, err, out)
		}
		nodes = append(nodes, n)
	}
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i], _ = n.ips()
	}
	for i, a := range nodes {
		for j := range nodes {
			if i != j {
				wait.For(t, 20*time.Second, a.name+" pings "+nodes[j].name, func() bool { return a.pingOnce(addrs[j], time.Second) == nil })
			}
		}
	}
	pid := func(r *haReplica) int { return r.cmd.Process.Pid }
	wait.For(t, 10*time.Second, "every node online on its own first replica", func() bool {
		on := nodeReplicas(t, db)
		for i, n := range nodes {
			if on[n.name] != pid(reps[i%3]) {
				return false
			}
		}
		return true
	})

	// n0 and n3 are on reps[0]: their pings to n1 and n2 run across its
	// death.
	var pingers []*exec.Cmd
	var outs []*syncBuf
	for _, p := range [][2]int{{0, 1}, {3, 2}} {
		cmd := exec.Command("ip", "netns", "exec", nodes[p[0]].ns.Name, "ping", "-i", "0.1", "-w", "8", addrs[p[1]])
		out := &syncBuf{}
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pingers, outs = append(pingers, cmd), append(outs, out)
	}
	wait.For(t, 10*time.Second, "pings answered before the kill", func() bool {
		return strings.Count(outs[0].String(), "bytes from") >= 5 && strings.Count(outs[1].String(), "bytes from") >= 5
	})
	dead := pid(reps[0])
	killed := time.Now()
	reps[0].cmd.Process.Signal(os.Kill)
	reps[0].cmd.Process.Wait()
	wait.For(t, 5*time.Second, "n0 and n3 on another replica", func() bool {
		on := nodeReplicas(t, db)
		return on["n0"] != 0 && on["n0"] != dead && on["n3"] != 0 && on["n3"] != dead
	})
	failover := time.Since(killed)

	// A change through a surviving replica reaches all six within 1 s.
	renamed := time.Now()
	if out, err := warren(reps[1].ns, "admin", "--server", reps[1].url, "--api-key", l.srv.apiKey, "--insecure", "nodes", "rename", "n4", "n4b"); err != nil {
		t.Fatalf("rename: %v\n%s", err, out)
	}
	seen := make([]time.Duration, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if wait.Poll(10*time.Second, func() bool {
				st, err := n.status()
				if err != nil {
					return false
				}
				if st.Self != nil && st.Self.Name == "n4b" {
					return true
				}
				for _, p := range st.Peers {
					if p.Name == "n4b" {
						return true
					}
				}
				return false
			}) {
				seen[i] = time.Since(renamed)
			}
		}()
	}
	wg.Wait()
	var slowest time.Duration
	for i, d := range seen {
		if d == 0 {
			t.Fatalf("%s never saw the rename", nodes[i].name)
		}
		slowest = max(slowest, d)
	}

	for i, cmd := range pingers {
		cmd.Wait()
		m := pingStats.FindStringSubmatch(outs[i].String())
		if m == nil {
			t.Fatalf("ping output: %s", outs[i].String())
		}
		sent, got := atoi(m[1]), atoi(m[2])
		t.Logf("pings across the kill: %d sent, %d received", sent, got)
		if sent-got > 1 {
			t.Errorf("%d of %d pings lost across the replica's death", sent-got, sent)
		}
	}

	// A node joined through reps[1] is reachable from n2 and n5 (on reps[2]).
	n6 := l.startNode("n6")
	if out, err := warren(n6.ns, "up", "--socket", n6.sock, "--server", reps[1].url, "--auth-key", key, "--hostname", "n6", "--timeout", "20s"); err != nil {
		t.Fatalf("up n6: %v\n%s", err, out)
	}
	joined := time.Now()
	a6, _ := n6.ips()
	for _, from := range []*node{nodes[2], nodes[5]} {
		wait.For(t, 10*time.Second, from.name+" pings n6", func() bool { return from.pingOnce(a6, 500*time.Millisecond) == nil })
	}
	reach := time.Since(joined)
	t.Logf("failover %v; rename seen by all six after %v; n6 reachable from replica C's nodes %v after joining", failover.Round(time.Millisecond),
		slowest.Round(time.Millisecond), reach.Round(time.Millisecond))
	if slowest > time.Second {
		t.Errorf("the rename reached the last node after %v, want within 1 s", slowest)
	}
	if reach > time.Second {
		t.Errorf("n6 reachable from replica C's nodes after %v, want within 1 s", reach)
	}
}

// TestHAReplicaRefusals: a `warren server` with another server key than
// the database is served with refuses to start, and so does one whose
// schema is older than the database's.
func TestHAReplicaRefusals(t *testing.T) {
	pg := os.Getenv(storetest.EnvPostgres)
	if pg == "" || warrenBin == "" {
		if os.Getenv(storetest.EnvRequirePostgres) == "1" && pg == "" {
			t.Fatalf("%s unset", storetest.EnvPostgres)
		}
		t.Skip("needs PostgreSQL and the warren binary (root)")
	}
	run := func(dsn string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, warrenBin, "server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--db", dsn).CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("the server did not refuse (still running after 30 s):\n%s", out)
		}
		return string(out), err
	}
	dsn := storetest.Schema(t, pg)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The first server records its key; one with another key is refused.
	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	err = st.ClaimServerKey(context.Background(), k.PublicKey().String())
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(dsn); err == nil || !strings.Contains(out, "another server key") {
		t.Fatalf("a replica with another server key: %v\n%s", err, out)
	}
	// A database migrated by a newer build is refused.
	if _, err := db.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (1000, 0)"); err != nil {
		t.Fatal(err)
	}
	if out, err := run(dsn); err == nil || !strings.Contains(out, "newer than this build") {
		t.Fatalf("an older replica on a newer database: %v\n%s", err, out)
	}
}

// syncBuf is a buffer a process writes to while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *syncBuf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
