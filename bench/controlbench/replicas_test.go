package main

import (
	"os"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/store/storetest"
)

// TestMain lets the test binary be the bench's server child: run starts
// children by re-executing itself with -serve.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestReplicas is the CI-sized run of `controlbench -replicas 2` (#20):
// 1000 simulated nodes spread over two replicas on one PostgreSQL
// database; every change (an endpoint update on a stream of either
// replica, a join and a leave through the first, an admin delete) reaches
// every node, whichever replica it streams from, without a stream drop or
// an apply error, and each replica's CPU and memory are reported. No
// timing is asserted: the times are the bench's report.
func TestReplicas(t *testing.T) {
	if raceEnabled {
		t.Skip("1000 nodes' crypto under the race detector takes minutes: `make test` runs this without -race")
	}
	pg := os.Getenv(storetest.EnvPostgres)
	if pg == "" {
		if os.Getenv(storetest.EnvRequirePostgres) == "1" {
			t.Fatalf("%s=1 but %s is unset", storetest.EnvRequirePostgres, storetest.EnvPostgres)
		}
		t.Skipf("%s unset", storetest.EnvPostgres)
	}
	nodes := 1000
	if testing.Short() {
		nodes = 100
	}
	res, err := run(runOpts{nodes: nodes, replicas: 2, changes: 8, db: pg, par: 64,
		timeout: time.Minute, connectTimeout: 5 * time.Minute, gap: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.TimedOut != 0 || res.ToAll.N != 8 {
		t.Errorf("%d of 8 changes reached all %d nodes (%d timed out)", res.ToAll.N, nodes, res.TimedOut)
	}
	for _, c := range res.PerChange {
		if c.Delivered != nodes {
			t.Errorf("%s change reached %d of %d nodes", c.Kind, c.Delivered, nodes)
		}
	}
	if res.Reconnects != 0 || res.ApplyErrors != 0 {
		t.Errorf("stream drops %d, apply errors %d", res.Reconnects, res.ApplyErrors)
	}
	if res.Connect.FullMaps != int64(nodes) {
		t.Errorf("full maps in the connect phase: %d, want %d", res.Connect.FullMaps, nodes)
	}
	for _, ph := range []phase{res.Connect, res.Changes_} {
		if len(ph.Replicas) != 2 {
			t.Fatalf("per-replica figures: %+v", ph.Replicas)
		}
		for i, r := range ph.Replicas {
			if r.RSSMiB <= 0 || r.HWMMiB <= 0 {
				t.Errorf("replica %d: RSS %v MiB, peak %v MiB", i, r.RSSMiB, r.HWMMiB)
			}
		}
	}
	// Both replicas served streams: each used CPU connecting its half.
	for i, r := range res.Connect.Replicas {
		if r.CPUSeconds <= 0 {
			t.Errorf("replica %d used no CPU in the connect phase", i)
		}
	}
	t.Logf("%d nodes over 2 replicas: all have full maps in %.1f s; change → all p50 %.1f ms p99 %.1f ms max %.1f ms; peak RSS %.0f / %.0f MiB",
		nodes, res.Connect.AllFullSeconds, res.ToAll.P50, res.ToAll.P99, res.ToAll.Max, res.Connect.Replicas[0].HWMMiB, res.Connect.Replicas[1].HWMMiB)
}
