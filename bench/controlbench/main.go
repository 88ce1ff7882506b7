// Command controlbench measures Warren's coordination server with many
// simulated nodes: how long N nodes take to get their full maps, and how
// long a change takes to reach all of them.
//
// The server runs as a child process (this binary re-executed with the
// hidden -serve flag) so that its CPU time (utime+stime from /proc/PID/stat)
// and memory (VmRSS, and VmHWM reset per phase through clear_refs) are its
// own. The child opens a store (SQLite in a temporary directory by default,
// or the -db DSN), registers the N node keys directly with
// store.RegisterNode (setup, not measured: the same transaction a
// RegisterRequest runs, without the handshake) and serves
// server.New(...).Handler() on 127.0.0.1.
//
// The parent runs the N nodes in one process, each a real noiseconn
// session (Noise IK over an HTTP upgrade on loopback TCP) speaking the
// control protocol: MapRequest, then it reads every message with proto.Read
// (which decodes and validates it) and applies it. Nodes keep their maps in
// a compact form (nodes shared between simulated nodes, patched by copy)
// because 10k nodes × 10k peers as netmap.NetworkMaps would not fit in
// memory; apply follows netmap.Apply's rules (version must match, no
// unknown or duplicate peer) but skips its O(peers) whole-map Validate. A
// dropped stream reconnects, as a real node would, and is counted.
//
// Phases:
//
//   - connect: all N nodes dial (at most -par handshakes and full maps in
//     flight); reported are the time until every node has its full map and
//     until every node sees all N-1 peers online (each connect is a delta
//     to every node already connected, so this is N²/2 peer changes).
//   - changes: K changes, cycling endpoint (a node sends EndpointUpdate on
//     its stream), join (a new node registers with a reusable auth key and
//     opens its stream), leave (that node disconnects), delete (an admin
//     deletes it: a store write and Server.Notify, which reloads the
//     world). Each is timed from the moment it is made until every one of
//     the N nodes has applied a message carrying it.
//   - storm (with -storm D): -storm-nodes nodes each send -storm-rate
//     EndpointUpdates a second for D, then the bench waits 2 s; reported
//     are the reports sent, what the server did with them (received,
//     written to the store, merged: it writes and fans out at most one per
//     node per second), the deltas every node received and the server's
//     CPU.
//
// Usage:
//
//	go build -o bin/controlbench ./bench/controlbench
//	bin/controlbench -nodes 1000 -changes 40 [-db postgres://...] [-json] [-cpuprofile PREFIX]
//	bin/controlbench -nodes 200 -changes 4 -storm 5s [-storm-nodes 5 -storm-rate 200]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/noise"
)

type bench struct {
	nodes     int
	serverKey noise.PublicKey
	authKey   string
	seed      uint64
	verbose   bool

	in  *interner
	cnt counters
	cur atomic.Pointer[change]

	convMu    sync.Mutex
	converged []bool
	nconv     int
	allConv   chan struct{}

	// kids are the server children: one, or -replicas of them on one
	// PostgreSQL database (kids[0] registered the nodes and takes the
	// commands; node i streams from kids[i % len(kids)]).
	kids []*serverChild
}

// serverChild is one server child process.
type serverChild struct {
	cmd *exec.Cmd
	in  io.Writer
	sc  *bufio.Scanner
	url string
	pid int
}

// urlFor is the server URL node idx streams from (-1: a joining node,
// which uses the first).
func (b *bench) urlFor(idx int) string {
	if idx < 0 {
		return b.kids[0].url
	}
	return b.kids[idx%len(b.kids)].url
}

func (b *bench) logf(format string, args ...any) {
	if b.verbose {
		log.Printf(format, args...)
	}
}

func (b *bench) markConverged(i int) {
	if i < 0 {
		return
	}
	b.convMu.Lock()
	defer b.convMu.Unlock()
	if b.converged[i] {
		return
	}
	b.converged[i] = true
	if b.nconv++; b.nconv == b.nodes {
		close(b.allConv)
	}
}

// command sends a command to the first server child and waits for its
// answer.
func (b *bench) command(cmd string) error { return b.kids[0].command(cmd) }

func (k *serverChild) command(cmd string) error {
	if _, err := fmt.Fprintln(k.in, cmd); err != nil {
		return err
	}
	if !k.sc.Scan() {
		return fmt.Errorf("server child: %v", k.sc.Err())
	}
	if l := k.sc.Text(); l != "ok" {
		return fmt.Errorf("server child: %s: %s", cmd, l)
	}
	return nil
}

// ask sends a command to every server child and returns their answers'
// fields after the first (which must be word), nil for a child that did
// not answer so.
func (b *bench) ask(cmd, word string, nfields int) [][]string {
	var out [][]string
	for _, k := range b.kids {
		var f []string
		if _, err := fmt.Fprintln(k.in, cmd); err == nil && k.sc.Scan() {
			f = strings.Fields(k.sc.Text())
		}
		if len(f) != nfields+1 || f[0] != word {
			out = append(out, nil)
			continue
		}
		out = append(out, f[1:])
	}
	return out
}

func main() {
	var (
		nodes   = flag.Int("nodes", 1000, "simulated nodes")
		reps    = flag.Int("replicas", 1, "server replicas on one PostgreSQL database (-db postgres://...); node i streams from replica i mod N, admin changes go through the first")
		changes = flag.Int("changes", 40, "changes to time (cycling endpoint, join, leave, delete)")
		db      = flag.String("db", "sqlite", `store: "sqlite" (a file in a temporary directory) or a postgres:// DSN`)
		asJSON  = flag.Bool("json", false, "print the results as JSON")
		par     = flag.Int("par", 64, "nodes connecting at once (dial until full map)")
		timeout = flag.Duration("timeout", 60*time.Second, "give up on one change after this long")
		gap     = flag.Duration("gap", time.Second, "pause between changes (longer than the server's fanout pacing, 50 µs per stream, so each change is timed alone)")
		connTO  = flag.Duration("connect-timeout", 2*time.Hour, "give up on the connect phase after this long")
		memProf = flag.String("memprofile", "", "write each server child's live heap after the connect phase to PREFIX.N.heap.pprof")
		prof    = flag.String("cpuprofile", "", "write server CPU profiles to PREFIX.connect.pprof and PREFIX.changes.pprof, and the bench's (nodes) to PREFIX.nodes.changes.pprof")
		verbose = flag.Bool("v", false, "log server and node errors")
		storm   = flag.Duration("storm", 0, "after the changes, run an endpoint storm this long (0: none)")
		stormN  = flag.Int("storm-nodes", 5, "nodes reporting endpoints in the storm")
		stormR  = flag.Int("storm-rate", 200, "endpoint reports per second per storming node")

		serveMode = flag.Bool("serve", false, "internal: run the server child")
		seed      = flag.Uint64("seed", 0, "internal: key seed")
		dir       = flag.String("dir", "", "internal: server child's directory")
		replica   = flag.String("replica", "", "internal: the server child's replica name")
		register  = flag.Bool("register", true, "internal: the server child registers the nodes")
	)
	flag.Parse()
	if *serveMode {
		if err := serve(serveOpts{nodes: *nodes, seed: *seed, db: *db, dir: *dir, quiet: !*verbose, replica: *replica, register: *register}); err != nil {
			fmt.Fprintln(os.Stderr, "controlbench server:", err)
			os.Exit(1)
		}
		return
	}
	if *nodes < 2 {
		log.Fatal("controlbench: -nodes must be at least 2")
	}
	if *reps < 1 || *reps > 1 && !strings.HasPrefix(*db, "postgres") {
		log.Fatal("controlbench: -replicas N (N > 1) needs -db postgres://...; replicas share a PostgreSQL database")
	}
	res, err := run(runOpts{nodes: *nodes, replicas: *reps, changes: *changes, db: *db, par: max(*par, 1), timeout: *timeout, gap: *gap,
		connectTimeout: *connTO, profile: *prof, memProfile: *memProf, verbose: *verbose, storm: *storm, stormNodes: max(*stormN, 1), stormRate: max(*stormR, 1)})
	if err != nil {
		log.Fatal("controlbench: ", err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
		return
	}
	res.print(os.Stdout)
}

type runOpts struct {
	nodes, changes, par     int
	replicas                int
	db, profile, memProfile string
	timeout, connectTimeout time.Duration
	gap                     time.Duration
	verbose                 bool
	storm                   time.Duration
	stormNodes, stormRate   int
}

// raiseNoFile lifts RLIMIT_NOFILE to cover one fd per node, plus slack:
// the nodes and the server child (which inherits the limit) each hold one
// end of every connection.
func raiseNoFile(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	want := uint64(n + 1024)
	if lim.Cur >= want {
		return nil
	}
	lim.Cur = want
	if lim.Max < want {
		lim.Max = want // needs CAP_SYS_RESOURCE
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w (run as root or raise ulimit -n)", want, err)
	}
	return nil
}

// startServers starts the server children one after another, each
// waiting until it is ready; the first registers the nodes.
func (b *bench) startServers(o runOpts) (setup time.Duration, err error) {
	start := time.Now()
	for i := range max(o.replicas, 1) {
		args := []string{"-serve", "-nodes", strconv.Itoa(o.nodes), "-seed", strconv.FormatUint(b.seed, 10), "-db", o.db,
			"-register=" + strconv.FormatBool(i == 0)}
		if o.replicas > 1 {
			args = append(args, "-replica", fmt.Sprintf("bench-%d", i))
		}
		if o.verbose {
			args = append(args, "-v")
		}
		k, authKey, err := startChild(args)
		if err != nil {
			return 0, fmt.Errorf("replica %d: %w", i, err)
		}
		b.kids = append(b.kids, k)
		if i == 0 {
			b.authKey = authKey
		}
	}
	return time.Since(start), nil
}

// startChild starts one server child with args (plus -dir) and reads its
// "ready URL SERVERKEY AUTHKEY" line.
func startChild(args []string) (*serverChild, string, error) {
	dir, err := os.MkdirTemp("", "controlbench-")
	if err != nil {
		return nil, "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	k := &serverChild{cmd: exec.Command(exe, append(args, "-dir", dir)...)}
	k.cmd.Stderr = os.Stderr
	if k.in, err = k.cmd.StdinPipe(); err != nil {
		return nil, "", err
	}
	out, err := k.cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := k.cmd.Start(); err != nil {
		return nil, "", err
	}
	k.pid = k.cmd.Process.Pid
	go func() { k.cmd.Wait(); os.RemoveAll(dir) }()
	k.sc = bufio.NewScanner(out)
	if !k.sc.Scan() {
		return nil, "", errors.New("server child exited during setup")
	}
	f := strings.Fields(k.sc.Text())
	if len(f) != 4 || f[0] != "ready" {
		return nil, "", fmt.Errorf("server child: %q", k.sc.Text())
	}
	k.url = f[1]
	if _, err := noise.ParsePublicKey(f[2]); err != nil {
		return nil, "", err
	}
	return k, f[3], nil
}

func run(o runOpts) (*result, error) {
	if err := raiseNoFile(o.nodes); err != nil {
		return nil, err
	}
	b := &bench{nodes: o.nodes, seed: uint64(time.Now().UnixNano()), verbose: o.verbose, in: newInterner(),
		converged: make([]bool, o.nodes), allConv: make(chan struct{})}
	res := &result{Nodes: o.nodes, Replicas: max(o.replicas, 1), Changes: o.changes, DB: o.db, Cores: runtime.NumCPU(), Date: time.Now().UTC().Format(time.RFC3339)}
	if strings.HasPrefix(res.DB, "postgres") {
		res.DB = "postgres"
	}
	if strings.HasPrefix(o.db, "postgres") {
		dsn, drop, err := freshSchema(context.Background(), o.db, b.seed)
		if err != nil {
			return nil, err
		}
		defer drop()
		o.db = dsn
	}
	fmt.Fprintf(os.Stderr, "controlbench: registering %d nodes in the server child...\n", o.nodes)
	setup, err := b.startServers(o)
	defer func() {
		for _, k := range b.kids {
			k.cmd.Process.Kill()
		}
	}()
	if err != nil {
		return nil, err
	}
	b.serverKey = serverKey(b.seed).PublicKey()
	res.SetupSeconds = setup.Seconds()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sims := make([]*simNode, o.nodes)
	for i := range sims {
		sims[i] = &simNode{b: b, idx: i, key: nodeKey(b.seed, i), port: 41641}
	}

	// Connect phase.
	if o.profile != "" {
		if err := b.command("profile " + o.profile + ".connect.pprof"); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "controlbench: connecting %d nodes...\n", o.nodes)
	p0, self0, c0 := b.phaseStart(), readProc("self"), b.snapCounters()
	start := time.Now()
	allFull := make(chan struct{})
	var full atomic.Int64
	sem := make(chan struct{}, o.par)
	var dialErrs atomic.Int64
	go func() {
		for _, n := range sims {
			sem <- struct{}{}
			go func() {
				for ctx.Err() == nil {
					c, err := n.dial(ctx)
					if err == nil {
						released := false
						n.run(ctx, c, func() {
							if !released {
								released = true
								<-sem
								if full.Add(1) == int64(o.nodes) {
									close(allFull)
								}
							}
						})
						return
					}
					dialErrs.Add(1)
					b.logf("node %d: dial: %v", n.idx, err)
					time.Sleep(200 * time.Millisecond)
				}
			}()
		}
	}()
	go func() { // progress, for long runs
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-allFull:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "controlbench: %v: %d of %d nodes have their full map\n", time.Since(start).Round(time.Second), full.Load(), o.nodes)
			}
		}
	}()
	deadline := time.After(o.connectTimeout)
	select {
	case <-allFull:
	case <-deadline:
		return nil, fmt.Errorf("connect phase: only %d of %d nodes got a full map in %v", full.Load(), o.nodes, o.connectTimeout)
	}
	res.Connect.AllFullSeconds = time.Since(start).Seconds()
	select {
	case <-b.allConv:
	case <-deadline:
		return nil, fmt.Errorf("connect phase: only %d of %d nodes see every peer online after %v", b.nconv, o.nodes, o.connectTimeout)
	}
	res.Connect.ConvergedSeconds = time.Since(start).Seconds()
	res.Connect.fill(p0, b.readServers(), self0, readProc("self"), c0, b.snapCounters())
	res.Connect.DialErrors = dialErrs.Load()
	if o.memProfile != "" {
		for i, k := range b.kids {
			if err := k.command(fmt.Sprintf("heapprofile %s.%d.heap.pprof", o.memProfile, i)); err != nil {
				return nil, err
			}
		}
	}
	if o.profile != "" {
		if err := b.command("stopprofile"); err != nil {
			return nil, err
		}
	}

	// Change phase.
	if o.profile != "" {
		if err := b.command("profile " + o.profile + ".changes.pprof"); err != nil {
			return nil, err
		}
		f, err := os.Create(o.profile + ".nodes.changes.pprof")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "controlbench: timing %d changes...\n", o.changes)
	time.Sleep(200 * time.Millisecond)
	p0, self0, c0 = b.phaseStart(), readProc("self"), b.snapCounters()
	if err := b.changes(ctx, o, sims, res); err != nil {
		return nil, err
	}
	res.Changes_.fill(p0, b.readServers(), self0, readProc("self"), c0, b.snapCounters())
	if o.profile != "" {
		pprof.StopCPUProfile()
		if err := b.command("stopprofile"); err != nil {
			return nil, err
		}
	}
	if o.storm > 0 {
		sr, err := b.storm(ctx, o, sims)
		if err != nil {
			return nil, err
		}
		res.Storm = sr
	}
	res.Reconnects = b.cnt.reconnects.Load()
	res.ApplyErrors = b.cnt.errors.Load()
	cancel()
	for _, k := range b.kids {
		k.in.(io.Closer).Close()
	}
	return res, nil
}
