package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// config is what the command line asks for.
type config struct {
	duration     time.Duration
	rounds       int
	setups       []string
	udpRate      string
	pingCount    int
	pingInterval time.Duration
	warren       string
	wireguardGo  string
	clkTck       float64
}

// tcpTest is one iperf3 TCP measurement.
type tcpTest struct {
	key     string // stable id, used in JSON
	label   string // row label
	streams int
	reverse bool // B→A (iperf3 -R: the server in B sends)
}

var tcpTests = []tcpTest{
	{"tcp1_ab", "TCP 1 stream A→B", 1, false},
	{"tcp1_ba", "TCP 1 stream B→A", 1, true},
	{"tcp4_ab", "TCP 4 streams A→B", 4, false},
	{"tcp4_ba", "TCP 4 streams B→A", 4, true},
}

// tcpResult is a TCP measurement and the CPU time the VPN processes of
// both ends used meanwhile.
type tcpResult struct {
	iperfResult
	CPUSeconds  float64 `json:"cpu_seconds,omitempty"`
	CPUSecPerGB float64 `json:"cpu_s_per_gb,omitempty"` // 0: not applicable
	// StealPercent is the share of the machine's CPU time that the
	// hypervisor gave to other guests during the test (from /proc/stat):
	// on a shared host, a round with much of it measured the host.
	StealPercent float64 `json:"steal_percent"`
}

// roundResult is everything measured for one setup in one round. A test
// that failed has its error in Errors and no value.
type roundResult struct {
	Setup    string               `json:"setup"`
	Round    int                  `json:"round"`
	TCP      map[string]tcpResult `json:"tcp"`
	UDP      *iperfResult         `json:"udp,omitempty"`
	PingIdle *pingStats           `json:"ping_idle,omitempty"`
	PingLoad *pingStats           `json:"ping_load,omitempty"`
	Errors   []string             `json:"errors,omitempty"`
}

func (r *roundResult) fail(what string, err error) {
	msg := fmt.Sprintf("%s: %v", what, err)
	r.Errors = append(r.Errors, msg)
	logf("  %s round %d: FAILED %s", r.Setup, r.Round, msg)
}

// bench runs the tests of one round of one setup against the running lab.
type bench struct {
	cfg    config
	lab    *lab
	setup  string
	target string // B's address on the path under test
	tun    *tunnel
}

// measureSetup brings a setup up (nothing for raw), runs every test and
// tears the setup down again.
func measureSetup(ctx context.Context, cfg config, l *lab, setup string, round int) roundResult {
	res := roundResult{Setup: setup, Round: round, TCP: map[string]tcpResult{}}
	b := &bench{cfg: cfg, lab: l, setup: setup, target: underlayB}
	switch setup {
	case "raw":
	case "wireguard-go", "warren":
		argv := []string{cfg.wireguardGo, "-f"}
		if setup == "warren" {
			argv = []string{cfg.warren, "wg", "-f"}
		}
		t, err := l.startTunnel(ctx, setup, argv)
		if err != nil {
			res.fail("start", err)
			return res
		}
		defer l.stopTunnel(t)
		b.tun, b.target = t, tunnelB
	default:
		res.fail("start", fmt.Errorf("unknown setup %q", setup))
		return res
	}

	if p, err := b.ping(ctx, nil); err != nil {
		res.fail("ping idle", err)
	} else {
		res.PingIdle = &p
		logf("  %-12s ping idle: avg %.3f p50 %.3f p99 %.3f max %.3f ms", setup, p.Avg, p.P50, p.P99, p.Max)
	}
	for _, tt := range tcpTests {
		if ctx.Err() != nil {
			break
		}
		r, err := b.tcp(ctx, tt)
		if err != nil {
			res.fail(tt.label, err)
			continue
		}
		res.TCP[tt.key] = r
		cpu := "-"
		if r.CPUSecPerGB > 0 {
			cpu = fmt.Sprintf("%.2f CPU-s/GB", r.CPUSecPerGB)
		}
		logf("  %-12s %s: %.2f Gbit/s, %s", setup, tt.label, r.BitsPerSecond/1e9, cpu)
	}
	if ctx.Err() == nil {
		if r, err := b.udp(ctx); err != nil {
			res.fail("UDP", err)
		} else {
			res.UDP = &r
			logf("  %-12s UDP %s A→B: %.2f Gbit/s received, %.2f%% lost", setup, cfg.udpRate, r.BitsPerSecond/1e9, r.LostPercent)
		}
	}
	if ctx.Err() == nil {
		if p, err := b.pingUnderLoad(ctx); err != nil {
			res.fail("ping under load", err)
		} else {
			res.PingLoad = &p
			logf("  %-12s ping under load: avg %.3f p50 %.3f p99 %.3f max %.3f ms (%d lost)", setup, p.Avg, p.P50, p.P99, p.Max, p.Lost())
		}
	}
	if err := ctx.Err(); err != nil {
		res.fail("run", err)
	}
	return res
}

// iperf runs the iperf3 client in A against the server in B for d and
// parses its JSON. A server still busy with the previous test is retried.
func (b *bench) iperf(ctx context.Context, d time.Duration, extra ...string) (iperfResult, error) {
	secs := strconv.Itoa(max(int(d.Round(time.Second)/time.Second), 1))
	args := append([]string{"iperf3", "-c", b.target, "-t", secs, "-J", "--connect-timeout", "5000"}, extra...)
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return iperfResult{}, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		tctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
		cmd := b.lab.inA(tctx, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		runErr := cmd.Run()
		cancel()
		r, err := parseIperf(stdout.Bytes())
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			return iperfResult{}, ctx.Err()
		}
		if runErr != nil && stdout.Len() == 0 {
			err = fmt.Errorf("%s: %w: %s", strings.Join(args, " "), runErr, bytes.TrimSpace(stderr.Bytes()))
		}
		lastErr = err
		if !errors.Is(err, errServerBusy) {
			// Anything else may be a wedged server: restart it once.
			if attempt > 0 {
				break
			}
			if rerr := b.lab.restartIperfServer(ctx); rerr != nil {
				return iperfResult{}, errors.Join(err, rerr)
			}
		}
	}
	return iperfResult{}, lastErr
}

// tcp runs one TCP test and charges the CPU time the VPN processes spent
// during it to the bytes received.
func (b *bench) tcp(ctx context.Context, tt tcpTest) (tcpResult, error) {
	args := []string{"-P", strconv.Itoa(tt.streams)}
	if tt.reverse {
		args = append(args, "-R")
	}
	before, err := b.cpuTicks()
	if err != nil {
		return tcpResult{}, err
	}
	stealBefore, err := machineTicks()
	if err != nil {
		return tcpResult{}, err
	}
	r, err := b.iperf(ctx, b.cfg.duration, args...)
	if err != nil {
		return tcpResult{}, err
	}
	after, err := b.cpuTicks()
	if err != nil {
		return tcpResult{}, err
	}
	stealAfter, err := machineTicks()
	if err != nil {
		return tcpResult{}, err
	}
	res := tcpResult{iperfResult: r, StealPercent: stealAfter.stealPercentSince(stealBefore)}
	if b.tun != nil {
		res.CPUSeconds = float64(after-before) / b.cfg.clkTck
		res.CPUSecPerGB = res.CPUSeconds / (r.Bytes / 1e9)
	}
	return res, nil
}

// cpuTimes is the machine's CPU time so far, from the first line of
// /proc/stat: all of it, and the part stolen by the hypervisor.
type cpuTimes struct{ total, steal uint64 }

func machineTicks() (cpuTimes, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	return parseMachineStat(string(data))
}

// stealPercentSince is the stolen share of the time between earlier and c.
func (c cpuTimes) stealPercentSince(earlier cpuTimes) float64 {
	// Some hypervisors step the steal counter back (live migration).
	if c.total <= earlier.total || c.steal < earlier.steal {
		return 0
	}
	return 100 * float64(c.steal-earlier.steal) / float64(c.total-earlier.total)
}

// cpuTicks is utime+stime of both VPN processes (0 for raw).
func (b *bench) cpuTicks() (uint64, error) {
	if b.tun == nil {
		return 0, nil
	}
	var sum uint64
	for _, pid := range b.tun.pids() {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("VPN process %d: %w", pid, err)
		}
		t, err := parseProcStat(string(data))
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

func (b *bench) udp(ctx context.Context) (iperfResult, error) {
	return b.iperf(ctx, b.cfg.duration, "-u", "-b", b.cfg.udpRate, "-l", "1380")
}

// ping sends cfg.pingCount probes from A to B at cfg.pingInterval. If
// started is not nil it is closed once ping runs.
func (b *bench) ping(ctx context.Context, started chan<- struct{}) (pingStats, error) {
	interval := strconv.FormatFloat(b.cfg.pingInterval.Seconds(), 'f', 3, 64)
	n := b.cfg.pingCount
	tctx, cancel := context.WithTimeout(ctx, time.Duration(n)*b.cfg.pingInterval+30*time.Second)
	defer cancel()
	cmd := b.lab.inA(tctx, "ping", "-n", "-c", strconv.Itoa(n), "-i", interval, "-W", "2", b.target)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return pingStats{}, err
	}
	if started != nil {
		close(started)
	}
	// ping exits 1 when some probe had no reply: the samples still count.
	_ = cmd.Wait()
	if ctx.Err() != nil {
		return pingStats{}, ctx.Err()
	}
	p, err := summarizePing(n, parsePing(out.String()))
	if err != nil {
		return p, fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return p, nil
}

// pingUnderLoad runs the probes while one TCP stream A→B saturates the path:
// the stream gets a second to ramp up before the first probe and outlasts
// the last one.
func (b *bench) pingUnderLoad(ctx context.Context) (pingStats, error) {
	probing := time.Duration(b.cfg.pingCount) * b.cfg.pingInterval
	load := time.Second + probing + 2*time.Second
	type iperfOut struct {
		r   iperfResult
		err error
	}
	done := make(chan iperfOut, 1)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		r, err := b.iperf(lctx, load)
		done <- iperfOut{r, err}
	}()
	select {
	case <-time.After(time.Second):
	case o := <-done:
		return pingStats{}, fmt.Errorf("load stream ended early: %v", o.err)
	case <-ctx.Done():
		return pingStats{}, ctx.Err()
	}
	p, perr := b.ping(ctx, nil)
	o := <-done
	if perr != nil {
		return p, perr
	}
	if o.err != nil {
		return p, fmt.Errorf("load stream: %w", o.err)
	}
	logf("  %-12s (load stream: %.2f Gbit/s)", b.setup, o.r.BitsPerSecond/1e9)
	return p, nil
}

// startIperfServer starts `iperf3 -s` in B, kept for the whole run.
func (l *lab) startIperfServer(ctx context.Context) error {
	p, err := l.start(l.nsB, "iperf3 server", nil, "iperf3", "-s")
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.iperfServer = p
	l.mu.Unlock()
	err = waitFor(ctx, 5*time.Second, "iperf3 server listening", func() bool {
		if p.exited() {
			return true
		}
		out, err := exec.Command("ip", "netns", "exec", l.nsB, "ss", "-Hltn", "sport", "= :5201").Output()
		return err == nil && len(bytes.TrimSpace(out)) > 0
	})
	if err == nil && p.exited() {
		err = fmt.Errorf("iperf3 server exited: %s", strings.TrimSpace(p.out.String()))
	}
	return err
}

func (l *lab) restartIperfServer(ctx context.Context) error {
	l.mu.Lock()
	p := l.iperfServer
	l.mu.Unlock()
	if p != nil {
		logf("  restarting the iperf3 server")
		l.stopProc(p)
	}
	return l.startIperfServer(ctx)
}
