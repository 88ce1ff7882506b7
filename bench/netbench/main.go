// Command netbench measures the raw veth, wireguard-go (the version pinned
// in go.mod) and Warren side by side in one run, on a lab of two network
// namespaces joined by a veth pair (MTU 1500; tunnel MTU 1420), and prints
// one markdown table with the Warren/wireguard-go ratios.
//
// For every setup and round it measures, with iperf3 (server in B, client
// in A): TCP with 1 and 4 streams in each direction, UDP A→B at a fixed
// rate with its loss; with ping: the RTT of probes on the idle path and
// while one TCP stream saturates it (avg, p50, p99, max); and, from
// /proc/PID/stat, the CPU time both VPN processes use during each TCP test
// per GB (1e9 bytes) received. Throughput on a shared machine swings a lot
// between runs, so the setups are interleaved within each round (raw,
// wireguard-go, warren; then again) and the table shows the best round:
// the maximum for throughput, the minimum for CPU, loss and latency.
//
// It needs root, ip (iproute2), wg (wireguard-tools), iperf3 and ping, and
// the binaries bin/warren and bin/wireguard-go; bench/run.sh builds them,
// installs the tools and runs it:
//
//	bench/run.sh [-quick] [-duration 10s] [-rounds 2] [-setups raw,wireguard-go,warren] [-udp-rate 1G] [-out FILE]
//
// Progress goes to stderr; the table goes to stdout and, with the machine,
// date, command and every round's values, to the markdown file -out; the
// raw results (ping samples included) go to the same name with .json.
// Namespaces, processes and interfaces are removed on exit, on error and on
// SIGINT/SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "netbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func mainErr() error {
	var (
		cfg    config
		setups string
		out    string
		quick  bool
		prefix string
		mc     meshConfig
		mesh   bool
		mtests string
	)
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of each iperf3 test")
	flag.IntVar(&cfg.rounds, "rounds", 2, "rounds; each runs every setup once, interleaved")
	flag.StringVar(&setups, "setups", "raw,wireguard-go,warren", "comma-separated setups, in the order of each round")
	flag.StringVar(&cfg.udpRate, "udp-rate", "1G", "target rate of the UDP test (iperf3 -b)")
	flag.IntVar(&cfg.pingCount, "ping-count", 200, "probes per ping test (200: p99 is not just the maximum)")
	flag.DurationVar(&cfg.pingInterval, "ping-interval", 10*time.Millisecond, "interval between probes")
	flag.StringVar(&out, "out", "bench/results/latest.md", "markdown report file (results also in the same name with .json); empty: none")
	flag.BoolVar(&quick, "quick", false, "smoke test: -duration 2s, 1 round")
	flag.StringVar(&cfg.warren, "warren", "bin/warren", "warren binary")
	flag.StringVar(&cfg.wireguardGo, "wireguard-go", "bin/wireguard-go", "wireguard-go binary")
	flag.StringVar(&prefix, "ns-prefix", "netbench", "prefix of the namespace names (the pid is appended)")
	flag.BoolVar(&mesh, "relay-mesh", false, "relay mode (meshrelay.go): Warren's relays against headscale's DERP through the mesh, setups warren-server,warren-relay,warren-peer,derp")
	flag.StringVar(&mc.headscale, "headscale", "bin/bench/headscale", "relay mode: headscale binary")
	flag.StringVar(&mc.tailscaled, "tailscaled", "bin/bench/tailscaled", "relay mode: tailscaled binary")
	flag.StringVar(&mc.tailscale, "tailscale", "bin/bench/tailscale", "relay mode: tailscale CLI binary")
	flag.StringVar(&mc.warrenRate, "warren-relay-rate", "", "relay mode: run Warren's relays with this per-node rate limit, e.g. 10M (the old default)")
	flag.StringVar(&mc.csv, "csv", "", "relay mode: CSV file for the results")
	flag.StringVar(&mc.profile, "profile", "", "relay mode: directory where Warren's server, relay and daemons write CPU profiles (SETUP-PROCESS.prof)")
	flag.StringVar(&mtests, "tests", "tcp1_ab,tcp1_ba", "relay mode: iperf3 tests ("+tcpTestKeys()+")")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if quick {
		cfg.duration, cfg.rounds = 2*time.Second, 1
	}
	if mesh {
		if !isFlagSet("setups") {
			setups = "warren-server,warren-relay,warren-peer,derp"
		}
		mc.config, mc.setups = cfg, strings.Split(setups, ",")
		mc.clkTck = clockTicks()
		for _, k := range strings.Split(mtests, ",") {
			i := slices.IndexFunc(tcpTests, func(t tcpTest) bool { return t.key == k })
			if i < 0 {
				return fmt.Errorf("-tests: unknown test %q (want %s)", k, tcpTestKeys())
			}
			mc.tests = append(mc.tests, tcpTests[i])
		}
		if os.Geteuid() != 0 {
			return fmt.Errorf("must run as root (network namespaces)")
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		logf("netbench -relay-mesh: %d round(s) of %s; %s per iperf3 test; load %.2f", mc.rounds, setups, mc.duration, loadAverage())
		return relayMeshMain(ctx, mc, prefix)
	}
	cfg.setups = strings.Split(setups, ",")
	if err := checkConfig(&cfg); err != nil {
		return err
	}
	cfg.clkTck = clockTicks()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	host := machine()
	logf("netbench: %d round(s) of %s; %s per iperf3 test; %s", cfg.rounds, strings.Join(cfg.setups, ", "), cfg.duration, host.summary())
	l, err := newLab(ctx, prefix)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer func() {
		logf("tearing down %s and %s", l.nsA, l.nsB)
		l.close()
	}()
	logf("lab: namespaces %s (%s) and %s (%s), veth MTU %s", l.nsA, underlayA, l.nsB, underlayB, vethMTU)
	if err := l.startIperfServer(ctx); err != nil {
		return err
	}

	var results []roundResult
	for round := 1; round <= cfg.rounds && ctx.Err() == nil; round++ {
		for _, s := range cfg.setups {
			if ctx.Err() != nil {
				break
			}
			logf("round %d/%d: %s", round, cfg.rounds, s)
			results = append(results, measureSetup(ctx, cfg, l, s, round))
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted")
	}

	rep := report{cfg: cfg, host: host, results: results, date: time.Now()}
	table := rep.header() + "\n" + renderTable(results, cfg.setups, cfg.udpRate)
	fmt.Print(table)
	if errs := rep.errors(); errs != "" {
		fmt.Print("\n" + errs)
	}
	if out != "" {
		if err := rep.write(out); err != nil {
			return err
		}
		logf("wrote %s and %s", out, jsonPath(out))
	}
	for _, r := range results {
		if len(r.Errors) > 0 {
			return fmt.Errorf("some tests failed (see above)")
		}
	}
	return nil
}

func checkConfig(cfg *config) error {
	if cfg.rounds < 1 || cfg.duration < time.Second || cfg.pingCount < 1 || cfg.pingInterval < 2*time.Millisecond {
		return fmt.Errorf("need -rounds ≥ 1, -duration ≥ 1s, -ping-count ≥ 1, -ping-interval ≥ 2ms")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (network namespaces)")
	}
	for _, tool := range []string{"ip", "wg", "iperf3", "ping", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (run scripts/install-deps.sh)", tool)
		}
	}
	for i, s := range cfg.setups {
		s = strings.TrimSpace(s)
		cfg.setups[i] = s
		if _, ok := setupTitle[s]; !ok {
			return fmt.Errorf("unknown setup %q (want raw, wireguard-go, warren)", s)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(cfg.setups)))) != len(cfg.setups) {
		return fmt.Errorf("setup listed twice in %q", strings.Join(cfg.setups, ","))
	}
	for _, b := range []struct {
		setup string
		path  *string
	}{{"warren", &cfg.warren}, {"wireguard-go", &cfg.wireguardGo}} {
		if !slices.Contains(cfg.setups, b.setup) {
			continue
		}
		abs, err := filepath.Abs(*b.path)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(abs); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s: no executable %s (build it: bench/run.sh does)", b.setup, abs)
		}
		*b.path = abs
	}
	return nil
}

// clockTicks is the unit of /proc/PID/stat times (getconf CLK_TCK; 100 if
// that fails, which it is on every Linux).
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}

// host describes the machine and the software under test.
type host struct {
	NProc       string `json:"nproc"`
	Kernel      string `json:"kernel"`
	CPU         string `json:"cpu"`
	Warren      string `json:"warren"`
	WireguardGo string `json:"wireguard_go"`
	Iperf3      string `json:"iperf3"`
	Command     string `json:"command"`
}

func machine() host {
	first := func(args ...string) string {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return "?"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return strings.TrimSpace(line)
	}
	h := host{NProc: first("nproc"), Kernel: first("uname", "-r"), CPU: "?"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	h.Warren = first(flagValue("warren"), "version")
	h.WireguardGo = wireguardGoVersion()
	h.Iperf3 = first("iperf3", "--version")
	h.Command = commandLine()
	return h
}

func flagValue(name string) string { return flag.Lookup(name).Value.String() }

func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func tcpTestKeys() string {
	var ks []string
	for _, t := range tcpTests {
		ks = append(ks, t.key)
	}
	return strings.Join(ks, ",")
}

// wireguardGoVersion is the pinned module version from go.mod's build info
// of the binary, or its --version output.
func wireguardGoVersion() string {
	bin := flagValue("wireguard-go")
	if out, err := exec.Command("go", "version", "-m", bin).Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "mod" && f[1] == "golang.zx2c4.com/wireguard" {
				return f[1] + " " + f[2]
			}
		}
	}
	out, _ := exec.Command(bin, "--version").Output()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// commandLine is how the benchmark was invoked: bench/run.sh passes its
// own command line in NETBENCH_COMMAND.
func commandLine() string {
	own := shellQuote(os.Args)
	if c := os.Getenv("NETBENCH_COMMAND"); c != "" {
		return c + "  (" + own + ")"
	}
	return own
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == ',' || r == '=' || r == ':' ||
				r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) < 0 {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

func (h host) summary() string {
	return fmt.Sprintf("%s CPUs (%s), kernel %s", h.NProc, h.CPU, h.Kernel)
}

// report is the outcome of a run.
type report struct {
	cfg     config
	host    host
	results []roundResult
	date    time.Time
}

func (r report) header() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# netbench %s\n\n", r.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- machine: %s\n", r.host.summary())
	fmt.Fprintf(&b, "- command: `%s`\n", r.host.Command)
	fmt.Fprintf(&b, "- warren: %s; wireguard-go: %s; %s\n", r.host.Warren, r.host.WireguardGo, r.host.Iperf3)
	fmt.Fprintf(&b, "- lab: two namespaces joined by a veth (MTU %s), tunnel MTU %s; iperf3 %s per test, "+
		"UDP payload 1380 B; %d ping probes every %v (under load: during one TCP stream A→B); "+
		"CPU = utime+stime of both VPN processes per GB (1e9 B) received\n",
		vethMTU, tunnelMTU, r.cfg.duration, r.cfg.pingCount, r.cfg.pingInterval)
	fmt.Fprintf(&b, "- best of %d interleaved round(s): max for throughput, min for CPU, loss and latency\n", r.cfg.rounds)
	b.WriteString("- every round also shows the host's steal: the share of the machine's CPU time the hypervisor gave " +
		"to other guests during each TCP test (from /proc/stat); rounds with much of it measured the host more than the setup\n")
	return b.String()
}

func (r report) errors() string {
	var b strings.Builder
	for _, res := range r.results {
		for _, e := range res.Errors {
			fmt.Fprintf(&b, "- %s round %d: %s\n", title(res.Setup), res.Round, firstLine(e))
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "Failed tests:\n\n" + b.String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// write writes the markdown report to path and the raw results beside it.
func (r report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	md := r.header() + "\n" + renderTable(r.results, r.cfg.setups, r.cfg.udpRate)
	if errs := r.errors(); errs != "" {
		md += "\n" + errs
	}
	md += "\n## Every round\n\n" + renderRounds(r.results, r.cfg.udpRate)
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		return err
	}
	data, err := json.MarshalIndent(struct {
		Date     time.Time     `json:"date"`
		Host     host          `json:"host"`
		Duration string        `json:"duration"`
		UDPRate  string        `json:"udp_rate"`
		Results  []roundResult `json:"results"`
	}{r.date, r.host, r.cfg.duration.String(), r.cfg.udpRate, r.results}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(jsonPath(path), append(data, '\n'), 0o644)
}

func jsonPath(md string) string {
	return strings.TrimSuffix(md, filepath.Ext(md)) + ".json"
}
