package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The relay mode (-relay-mesh): Warren's relays against Tailscale's DERP,
// each as users run it, in one run on the same namespaces (meshlab.go):
//
//	warren-server  `warren server --relay` (the embedded relay), a
//	               `warren daemon` in A and in B (TUN)
//	warren-relay   a standalone `warren relay` as the map's only relay
//	warren-peer    warren-server plus a node in C approved as a peer
//	               relay (meshpeer.go): UDP through C
//	derp           headscale with its embedded DERP, tailscaled in A and B
//
// Direct UDP between A and B is dropped by S, so every setup is relayed;
// the bench checks that each product says so (Warren: `warren status`
// path "relay" or "peer-relay c"; Tailscale: `tailscale ping` "via
// DERP(...)") and records it. For each setup and test it measures iperf3
// TCP through the mesh (server in B, client in A) and the CPU time of the
// relaying process (the server, the relay, C's node, headscale) and both
// nodes per GB received.

// meshConfig is what -relay-mesh runs with.
type meshConfig struct {
	config
	headscale, tailscaled, tailscale string
	warrenRate                       string // a rate limit for Warren's relays ("" none)
	csv                              string
	profile                          string // directory for Warren's CPU profiles ("" none)
	tests                            []tcpTest
}

// meshResult is one setup's test in one round.
type meshResult struct {
	round             int
	setup, test, path string
	res               iperfResult
	relayCPU, nodeCPU float64 // seconds
	load1, steal      float64
	err               error
}

func (r meshResult) gbps() float64 { return r.res.BitsPerSecond / 1e9 }
func (r meshResult) cpuPerGB() float64 {
	return (r.relayCPU + r.nodeCPU) / (r.res.Bytes / 1e9)
}

func relayMeshMain(ctx context.Context, mc meshConfig, prefix string) error {
	for _, tool := range []string{"ip", "iperf3", "ping", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (run scripts/install-deps.sh)", tool)
		}
	}
	for _, p := range []*string{&mc.warren, &mc.headscale, &mc.tailscaled, &mc.tailscale} {
		if slices.Contains(mc.setups, "derp") || p == &mc.warren {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			if fi, err := os.Stat(abs); err != nil || fi.Mode()&0o111 == 0 {
				return fmt.Errorf("no executable %s (bench/relaymesh.sh builds it)", abs)
			}
			*p = abs
		}
	}
	l, err := newMeshLab(ctx, prefix)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer func() {
		logf("tearing down %s, %s, %s and %s", l.nsS, l.nsA, l.nsB, l.nsC)
		l.close()
	}()
	logf("lab: %s (router, servers; UDP between A and B dropped), %s (%s), %s (%s), %s (%s, peer relay)", l.nsS, l.nsA, meshA, l.nsB, meshB, l.nsC, meshC)
	if err := l.startIperfServer(ctx); err != nil {
		return err
	}
	var results []meshResult
	for round := 1; round <= mc.rounds && ctx.Err() == nil; round++ {
		for _, setup := range mc.setups {
			if ctx.Err() != nil {
				break
			}
			logf("round %d/%d: %s", round, mc.rounds, setup)
			results = append(results, l.measureMesh(ctx, mc, setup, round)...)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted")
	}
	logf("UDP datagrams between A and B S dropped: %d", l.udpDropped(ctx))
	table := meshTable(results, mc)
	fmt.Print(table)
	if mc.csv != "" {
		if err := os.MkdirAll(filepath.Dir(mc.csv), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(mc.csv, []byte(meshCSV(results, mc)), 0o644); err != nil {
			return err
		}
		logf("wrote %s", mc.csv)
	}
	for _, r := range results {
		if r.err != nil {
			return fmt.Errorf("some tests failed (see above)")
		}
	}
	return nil
}

// measureMesh brings one setup up, runs every test and tears it down.
func (l *lab) measureMesh(ctx context.Context, mc meshConfig, setup string, round int) []meshResult {
	var m *meshSetup
	var err error
	switch setup {
	case "warren-server":
		m, err = l.startWarren(ctx, mc.warren, setup, false, mc.warrenRate, mc.profile)
	case "warren-relay":
		m, err = l.startWarren(ctx, mc.warren, setup, true, mc.warrenRate, mc.profile)
	case "warren-peer":
		m, err = l.startWarrenPeer(ctx, mc.warren, setup, mc.warrenRate, mc.profile)
	case "derp":
		m, err = l.startDERP(ctx, mc.headscale, mc.tailscaled, mc.tailscale)
	default:
		err = fmt.Errorf("unknown setup %q", setup)
	}
	if err != nil {
		logf("  %s round %d: FAILED to start: %v", setup, round, err)
		return []meshResult{{round: round, setup: setup, test: "start", err: err}}
	}
	defer l.stopMesh(m)
	logf("  %s: A reaches B (%s) via %s", setup, m.targetB, m.path)
	b := &bench{cfg: mc.config, lab: l, setup: setup, target: m.targetB}
	var out []meshResult
	for _, tt := range mc.tests {
		r := meshResult{round: round, setup: setup, test: tt.key, path: m.path}
		r.load1 = loadAverage()
		args := []string{"-P", strconv.Itoa(tt.streams)}
		if tt.reverse {
			args = append(args, "-R")
		}
		check := func() error { return nil }
		if m.guard != nil {
			check = m.guard()
		}
		udp0 := l.udpDropped(ctx)
		cpu0, err0 := procCPU(m.pids(), mc.clkTck)
		st0, _ := machineTicks()
		r.res, r.err = b.iperf(ctx, mc.duration, args...)
		cpu1, err1 := procCPU(m.pids(), mc.clkTck)
		st1, _ := machineTicks()
		if r.err == nil && (err0 != nil || err1 != nil) {
			r.err = fmt.Errorf("CPU time: %v %v", err0, err1)
		}
		udp1 := l.udpDropped(ctx)
		if err := check(); r.err == nil && err != nil {
			r.err = fmt.Errorf("path: %w", err)
		}
		if r.err != nil {
			logf("  %s %s: FAILED %v", setup, tt.label, r.err)
		} else {
			r.relayCPU, r.nodeCPU = cpu1[0]-cpu0[0], cpu1[1]+cpu1[2]-cpu0[1]-cpu0[2]
			r.steal = st1.stealPercentSince(st0)
			logf("  %-13s %-18s %6.3f Gbit/s  %6.2f CPU-s/GB (relay %.2f s, nodes %.2f s)  load %.2f steal %.0f%%  UDP A↔B dropped %d",
				setup, tt.label, r.gbps(), r.cpuPerGB(), r.relayCPU, r.nodeCPU, r.load1, r.steal, udp1-udp0)
		}
		out = append(out, r)
	}
	if m.drops != nil {
		logf("  %s counters: %s", setup, m.drops())
	}
	return out
}

// procCPU is utime+stime of each pid, in seconds.
func procCPU(pids []int, clkTck float64) ([]float64, error) {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, err
		}
		t, err := parseProcStat(string(data))
		if err != nil {
			return nil, err
		}
		out[i] = float64(t) / clkTck
	}
	return out, nil
}

// loadAverage is the machine's 1-minute load average (-1 if unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		return -1
	}
	return f
}

// bestMesh is the best round of a setup's test: the maximum throughput
// and, separately, the minimum CPU per GB.
func bestMesh(results []meshResult, setup, test string) (gbps, cpu float64, ok bool) {
	cpu = math.Inf(1)
	for _, r := range results {
		if r.setup == setup && r.test == test && r.err == nil {
			gbps, cpu, ok = max(gbps, r.gbps()), min(cpu, r.cpuPerGB()), true
		}
	}
	return gbps, cpu, ok
}

// meshTable is the report: per test, each setup's best Gbit/s and CPU-s
// per GB, and each Warren setup's ratios to DERP; then the peer relay's
// ratios to the server's TCP relay.
func meshTable(results []meshResult, mc meshConfig) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nRelayed through the mesh (UDP between A and B dropped), best of %d round(s), %s per test\n\n", mc.rounds, mc.duration)
	fmt.Fprintf(&sb, "| test | setup | Gbit/s | CPU-s/GB | × DERP Gbit/s | × DERP CPU-s/GB |\n|---|---|---|---|---|---|\n")
	for _, tt := range mc.tests {
		dg, dc, dok := bestMesh(results, "derp", tt.key)
		for _, s := range mc.setups {
			g, c, ok := bestMesh(results, s, tt.key)
			if !ok {
				fmt.Fprintf(&sb, "| %s | %s | failed | | | |\n", tt.label, s)
				continue
			}
			rg, rc := "", ""
			if dok && s != "derp" {
				rg, rc = fmt.Sprintf("%.2f×", g/dg), fmt.Sprintf("%.2f×", c/dc)
			}
			fmt.Fprintf(&sb, "| %s | %s | %.3f | %.2f | %s | %s |\n", tt.label, s, g, c, rg, rc)
		}
	}
	if slices.Contains(mc.setups, "warren-peer") && slices.Contains(mc.setups, "warren-server") {
		fmt.Fprintf(&sb, "\nWarren's peer relay against its TCP relay (warren-peer ÷ warren-server)\n\n")
		fmt.Fprintf(&sb, "| test | × Gbit/s | × CPU-s/GB |\n|---|---|---|\n")
		for _, tt := range mc.tests {
			if rg, rc, ok := peerToTCPRelay(results, tt.key); ok {
				fmt.Fprintf(&sb, "| %s | %.2f× | %.2f× |\n", tt.label, rg, rc)
			}
		}
	}
	return sb.String()
}

// peerToTCPRelay is the peer relay's best against the server's TCP relay's
// in a test: Gbit/s and CPU-s/GB ratios.
func peerToTCPRelay(results []meshResult, test string) (gbps, cpu float64, ok bool) {
	pg, pc, pok := bestMesh(results, "warren-peer", test)
	sg, sc, sok := bestMesh(results, "warren-server", test)
	return pg / sg, pc / sc, pok && sok
}

// meshCSV is every round's rows, then the best rows and the ratios (to
// DERP; the peer relay's also to the server's TCP relay).
func meshCSV(results []meshResult, mc meshConfig) string {
	var sb strings.Builder
	date := time.Now().UTC().Format("2006-01-02T15:04Z")
	commit := firstLine(mustOutput(mc.warren, "version"))
	sb.WriteString("date,warren,kind,round,setup,test,gbit_s,cpu_s_per_gb,relay_cpu_s,nodes_cpu_s,bytes,retransmits,path,load1,steal_pct,error\n")
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(&sb, "%s,%q,round,%d,%s,%s,,,,,,,%q,%.2f,,%q\n", date, commit, r.round, r.setup, r.test, r.path, r.load1, r.err.Error())
			continue
		}
		fmt.Fprintf(&sb, "%s,%q,round,%d,%s,%s,%.4f,%.3f,%.2f,%.2f,%.0f,%d,%q,%.2f,%.1f,\n", date, commit, r.round, r.setup, r.test,
			r.gbps(), r.cpuPerGB(), r.relayCPU, r.nodeCPU, r.res.Bytes, r.res.Retransmits, r.path, r.load1, r.steal)
	}
	for _, tt := range mc.tests {
		dg, dc, dok := bestMesh(results, "derp", tt.key)
		for _, s := range mc.setups {
			g, c, ok := bestMesh(results, s, tt.key)
			if !ok {
				continue
			}
			fmt.Fprintf(&sb, "%s,%q,best,,%s,%s,%.4f,%.3f,,,,,,,,\n", date, commit, s, tt.key, g, c)
			if dok && s != "derp" {
				fmt.Fprintf(&sb, "%s,%q,ratio_to_derp,,%s,%s,%.3f,%.3f,,,,,,,,\n", date, commit, s, tt.key, g/dg, c/dc)
			}
		}
		if rg, rc, ok := peerToTCPRelay(results, tt.key); ok {
			fmt.Fprintf(&sb, "%s,%q,ratio_to_warren_server,,warren-peer,%s,%.3f,%.3f,,,,,,,,\n", date, commit, tt.key, rg, rc)
		}
	}
	return sb.String()
}

func mustOutput(args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
