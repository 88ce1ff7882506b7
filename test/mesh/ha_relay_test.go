package mesh

import (
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/store/storetest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// homeRelay returns the relay region a's traffic to peer takes, if it is
// relayed.
func homeRelay(a *node, peer string) string {
	st, err := a.status()
	if err != nil {
		return ""
	}
	p := peerNamed(st, peer)
	if p == nil || p.Path != "relay" {
		return ""
	}
	return p.PathRelay
}

// TestHARelays: two `warren server --relay` replicas; both relays are in
// every node's relay map and both nodes (one streaming from each replica)
// share the home relay, so with their direct path blocked their traffic
// is relayed. kill -9 of the replica whose relay is their home: its relay
// leaves the map within seconds, both nodes move to the other replica's
// relay and the relayed traffic flows again.
func TestHARelays(t *testing.T) {
	pg := os.Getenv(storetest.EnvPostgres)
	if pg == "" {
		if os.Getenv(storetest.EnvRequirePostgres) == "1" {
			t.Fatalf("%s unset", storetest.EnvPostgres)
		}
		t.Skip("replicas need PostgreSQL")
	}
	backends(t)
	dsn := storetest.Schema(t, pg)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := newLab(t, dsn)
	reps := l.startReplicas(2, "--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "ha")
	key := l.mustAdmin("authkeys", "create", "--user", "ha", "--reusable")
	var nodes []*node
	for i := range 2 {
		n := l.startNode([]string{"ra", "rb"}[i])
		if out, err := warren(n.ns, "up", "--socket", n.sock, "--server", urlsFrom(reps, i), "--auth-key", key,
			"--hostname", n.name, "--timeout", "20s"); err != nil {
			t.Fatalf("up %s: %v\n%s", n.name, err, out)
		}
		nodes = append(nodes, n)
	}
	a, b := nodes[0], nodes[1]
	// No direct path between the two: the router drops UDP between them.
	l.router.Run(t, "nft", "add table inet cut { chain block { type filter hook forward priority 0; ip saddr "+a.under+" ip daddr "+b.under+
		" meta l4proto udp drop; ip saddr "+b.under+" ip daddr "+a.under+" meta l4proto udp drop; }; }")
	waitPath(t, a, b, "relay", 30*time.Second)
	waitPath(t, b, a, "relay", 10*time.Second)
	home := homeRelay(a, b.name)
	if hb := homeRelay(b, a.name); home == "" || hb != home {
		t.Fatalf("home relays %q and %q, want one shared", home, hb)
	}
	t.Logf("home relay %s", home)
	relays := func() int {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM replica_relays").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := relays(); n != 2 {
		t.Fatalf("%d relays registered, want both replicas'", n)
	}

	// The first replica registered its relay first: it is the home. Kill it.
	killed := time.Now()
	reps[0].cmd.Process.Signal(os.Kill)
	reps[0].cmd.Process.Wait()
	bV4, _ := b.ips()
	aV4, _ := a.ips()
	var moved time.Duration
	wait.For(t, 20*time.Second, "both nodes relaying through the other replica's relay, pings answered", func() bool {
		ok := a.pingOnce(bV4, 300*time.Millisecond) == nil && b.pingOnce(aV4, 300*time.Millisecond) == nil
		ha, hb := homeRelay(a, b.name), homeRelay(b, a.name)
		if ok && ha != "" && ha != home && hb == ha {
			moved = time.Since(killed)
			return true
		}
		return false
	})
	t.Logf("relayed traffic flows through the other relay %v after the kill", moved.Round(time.Millisecond))
	if n := relays(); n != 1 {
		t.Fatalf("%d relays registered after the kill, want the survivor's", n)
	}
}
