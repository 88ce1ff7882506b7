package main

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseIperfTCP(t *testing.T) {
	data, err := os.ReadFile("testdata/iperf3-tcp.json") // iperf3 3.12, -P 2 -R
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseIperf(data)
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != 12582912 || math.Abs(r.BitsPerSecond-100640249.38289131) > 1e-3 || r.SentBytes != 12582912 {
		t.Errorf("got %+v", r)
	}
	if r.LostPercent != 0 {
		t.Errorf("TCP with loss %v", r.LostPercent)
	}
}

func TestParseIperfUDP(t *testing.T) {
	data, err := os.ReadFile("testdata/iperf3-udp.json") // iperf3 3.12, -u -b 10M -l 1380
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseIperf(data)
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != 1250280 || r.LostPercent != 0 || r.JitterMs <= 0 {
		t.Errorf("got %+v", r)
	}
	// Loss from the server's counts, as "sum" carries them.
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	sum := doc["end"].(map[string]any)["sum"].(map[string]any)
	sum["lost_packets"], sum["packets"], sum["lost_percent"] = 90, 900, 10.0
	lossy, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := parseIperf(lossy); err != nil || r.LostPercent != 10 {
		t.Errorf("lossy: %+v, %v", r, err)
	}
}

func TestParseIperfErrors(t *testing.T) {
	for _, in := range []string{
		`{"start":{},"intervals":[],"end":{},"error":"error - the server is busy running a test. try again later"}`,
		`{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`,
		`{"start":{},"end":{}}`,
		`{"end":{"sum_received":{"bytes":0,"seconds":0}}}`,
		`not json`,
	} {
		if _, err := parseIperf([]byte(in)); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
	_, err := parseIperf([]byte(`{"error":"error - the server is busy running a test. try again later"}`))
	if err == nil || !errors.Is(err, errServerBusy) {
		t.Errorf("busy: %v", err)
	}
}

const pingSample = `PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.
64 bytes from 100.64.0.2: icmp_seq=1 ttl=64 time=0.611 ms
64 bytes from 100.64.0.2: icmp_seq=2 ttl=64 time=0.250 ms
64 bytes from 100.64.0.2: icmp_seq=2 ttl=64 time=0.260 ms (DUP!)
64 bytes from 100.64.0.2: icmp_seq=4 ttl=64 time=12.5 ms
64 bytes from 100.64.0.2: icmp_seq=5 ttl=64 time<0.001 ms

--- 100.64.0.2 ping statistics ---
5 packets transmitted, 4 received, +1 duplicates, 20% packet loss, time 82ms
rtt min/avg/max/mdev = 0.000/3.340/12.500/5.300 ms
`

func TestParsePing(t *testing.T) {
	got := parsePing(pingSample)
	want := []float64{0.611, 0.250, 12.5, 0.001}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	p, err := summarizePing(5, got)
	if err != nil {
		t.Fatal(err)
	}
	if p.Lost() != 1 || p.P50 != 0.250 || p.P99 != 12.5 || p.Max != 12.5 || math.Abs(p.Avg-13.362/4) > 1e-9 {
		t.Errorf("got %+v", p)
	}
	if _, err := summarizePing(3, nil); err == nil {
		t.Error("no replies: no error")
	}
}

func TestPercentile(t *testing.T) {
	var v []float64
	for i := 1; i <= 100; i++ {
		v = append(v, float64(i))
	}
	for _, c := range []struct{ pct, want float64 }{{50, 50}, {99, 99}, {100, 100}, {0, 1}, {1, 1}} {
		if got := percentile(v, c.pct); got != c.want {
			t.Errorf("p%v = %v, want %v", c.pct, got, c.want)
		}
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("one sample: %v", got)
	}
}

func TestParseMachineStat(t *testing.T) {
	c0, err := parseMachineStat("cpu  100 5 50 800 10 0 5 30 7 0\ncpu0 1 2 3\n")
	if err != nil || c0 != (cpuTimes{total: 1000, steal: 30}) {
		t.Fatalf("got %+v, %v; want total 1000 steal 30", c0, err)
	}
	c1 := cpuTimes{total: 1200, steal: 80}
	if got := c1.stealPercentSince(c0); got != 25 {
		t.Errorf("steal %v%%, want 25%%", got)
	}
	if got := c0.stealPercentSince(c0); got != 0 {
		t.Errorf("no time passed: steal %v%%", got)
	}
	if got := (cpuTimes{total: 1200, steal: 10}).stealPercentSince(c0); got != 0 {
		t.Errorf("steal counter stepped back: %v%%, want 0", got)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 3 4 5 6 7 x"} {
		if _, err := parseMachineStat(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := machineTicks(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	stat := "4242 (wire guard) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 269 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615\n"
	got, err := parseProcStat(stat)
	if err != nil || got != 1000 {
		t.Errorf("got %d, %v; want 1000", got, err)
	}
	if _, err := parseProcStat("4242 (x) S 1 2"); err == nil {
		t.Error("short stat: no error")
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err == nil {
		if _, err := parseProcStat(string(self)); err != nil {
			t.Errorf("/proc/self/stat: %v", err)
		}
	}
}

func TestRenderTable(t *testing.T) {
	tcp := func(gbps, cpu float64) tcpResult {
		return tcpResult{iperfResult: iperfResult{Bytes: gbps * 1e9 / 8 * 10, Seconds: 10, BitsPerSecond: gbps * 1e9}, CPUSecPerGB: cpu}
	}
	all := func(gbps, cpu float64) map[string]tcpResult {
		m := map[string]tcpResult{}
		for _, tt := range tcpTests {
			m[tt.key] = tcp(gbps, cpu)
		}
		return m
	}
	ping := func(ms float64) *pingStats { p, _ := summarizePing(2, []float64{ms, ms}); return &p }
	results := []roundResult{
		{Setup: "raw", Round: 1, TCP: all(14, 0), UDP: &iperfResult{BitsPerSecond: 1e9}, PingIdle: ping(0.05), PingLoad: ping(0.06)},
		{Setup: "wireguard-go", Round: 1, TCP: all(1.5, 8), UDP: &iperfResult{BitsPerSecond: 0.9e9, LostPercent: 10}, PingIdle: ping(1), PingLoad: ping(10)},
		{Setup: "warren", Round: 1, TCP: all(2, 6), UDP: &iperfResult{BitsPerSecond: 1e9}, PingIdle: ping(0.5), PingLoad: ping(5)},
		{Setup: "raw", Round: 2, TCP: all(16, 0), UDP: &iperfResult{BitsPerSecond: 1e9}, PingIdle: ping(0.04), PingLoad: ping(0.07)},
		{Setup: "wireguard-go", Round: 2, TCP: all(1, 7), UDP: &iperfResult{BitsPerSecond: 0.9e9, LostPercent: 5}, PingIdle: ping(2), PingLoad: ping(8)},
		{Setup: "warren", Round: 2, TCP: map[string]tcpResult{}, Errors: []string{"TCP: boom"}, PingIdle: ping(0.4)},
	}
	table := renderTable(results, []string{"raw", "wireguard-go", "warren"}, "1G")
	for _, want := range []string{
		"| metric | raw veth | wireguard-go | warren | warren/wireguard-go |",
		"| TCP 1 stream A→B (Gbit/s) | 16.00 | 1.50 | 2.00 | 1.33× |",                       // max over rounds
		"| CPU, TCP 4 streams B→A (CPU-s/GB) | – | 7.00 | 6.00 | 0.86× (lower is better) |", // min
		"| UDP 1G A→B loss (%) | 0.00 | 5.00 | 0.00 | 0.00× (lower is better) |",
		"| ping idle avg (ms) | 0.040 | 1.000 | 0.400 | 0.40× (lower is better) |",
		"| ping under load p99 (ms) | 0.060 | 8.000 | 5.000 | 0.62× (lower is better) |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	perSetup := 0
	for _, m := range metrics("1G") {
		if !m.rounds {
			perSetup++
		}
	}
	if n := strings.Count(table, "\n"); n != 2+perSetup {
		t.Errorf("%d lines, want %d", n, 2+perSetup)
	}
	if strings.Contains(table, "host steal") {
		t.Errorf("the best-of table shows the per-round steal:\n%s", table)
	}
	// Without both tunnels there is no ratio column; a missing value shows.
	table = renderTable(results[5:], []string{"warren"}, "1G")
	if strings.Contains(table, "warren/wireguard-go") || !strings.Contains(table, "| TCP 1 stream A→B (Gbit/s) | error |") {
		t.Errorf("warren only:\n%s", table)
	}
	if got := ratio(metric{lower: true}, 0, 0); !strings.HasPrefix(got, "equal") {
		t.Errorf("0/0: %q", got)
	}
	rounds := renderRounds(results, "1G")
	if !strings.Contains(rounds, "| warren r2 |") || !strings.Contains(rounds, "| TCP 1 stream A→B (Gbit/s) | 14.00 | 1.50 | 2.00 | 16.00 | 1.00 | – |") ||
		!strings.Contains(rounds, "| host steal, TCP 1 stream A→B (%) | 0 | 0 | 0 | 0 | 0 | – |") {
		t.Errorf("rounds:\n%s", rounds)
	}
}

func TestShellQuote(t *testing.T) {
	if got := shellQuote([]string{"bin/netbench", "-setups", "raw,warren", "it's", ""}); got != `bin/netbench -setups raw,warren 'it'\''s' ''` {
		t.Errorf("got %s", got)
	}
}

func TestMeshTableRatios(t *testing.T) {
	mc := meshConfig{config: config{rounds: 2, duration: 10 * time.Second, setups: []string{"warren-server", "warren-peer", "derp"}}, tests: tcpTests[:1]}
	res := func(round int, setup string, gbps, gb, cpu float64) meshResult {
		return meshResult{round: round, setup: setup, test: "tcp1_ab", res: iperfResult{BitsPerSecond: gbps * 1e9, Bytes: gb * 1e9}, relayCPU: cpu / 2, nodeCPU: cpu / 2}
	}
	// Best of rounds: the maximum throughput, the minimum CPU per GB, each on its own.
	results := []meshResult{res(1, "warren-server", 0.6, 1, 10), res(2, "warren-server", 0.5, 1, 8),
		res(1, "derp", 0.3, 1, 20), res(2, "derp", 0.4, 1, 24), res(1, "warren-peer", 1.2, 1, 4)}
	got := meshTable(results, mc)
	for _, want := range []string{"| TCP 1 stream A→B | warren-server | 0.600 | 8.00 | 1.50× | 0.40× |", "| TCP 1 stream A→B | derp | 0.400 | 20.00 |  |  |",
		"| TCP 1 stream A→B | warren-peer | 1.200 | 4.00 | 3.00× | 0.20× |", "| TCP 1 stream A→B | 2.00× | 0.50× |"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	csv := meshCSV(results, mc)
	for _, want := range []string{",ratio_to_derp,,warren-server,tcp1_ab,1.500,0.400,", ",ratio_to_warren_server,,warren-peer,tcp1_ab,2.000,0.500,"} {
		if !strings.Contains(csv, want) {
			t.Errorf("CSV lacks the ratio row %q:\n%s", want, csv)
		}
	}
}

func TestPeerRelayCarried(t *testing.T) {
	for _, c := range []struct {
		d    peerCounters
		fail string
	}{
		{peerCounters{forwarded: 200000, tcpRelay: 30}, ""},
		{peerCounters{forwarded: 200000, tcpRelay: 2100}, ""},
		{peerCounters{forwarded: 200000, tcpRelay: 2101}, "the TCP relay carried 2101"},
		{peerCounters{forwarded: 999, tcpRelay: 0}, "forwarded only 999"},
	} {
		err := peerRelayCarried(c.d)
		if c.fail == "" && err != nil || c.fail != "" && (err == nil || !strings.Contains(err.Error(), c.fail)) {
			t.Errorf("%+v: %v, want %q", c.d, err, c.fail)
		}
	}
}

func TestMetricValue(t *testing.T) {
	text := "# HELP warren_relay_packets_total x\nwarren_relay_packets_total{event=\"dropped\"} 3\nwarren_relay_packets_total{event=\"sent\"} 1.234e+06\n"
	if v, err := metricValue(text, `warren_relay_packets_total{event="sent"}`); err != nil || v != 1234000 {
		t.Errorf("sent: %v %v", v, err)
	}
	if _, err := metricValue(text, `warren_relay_packets_total{event="received"}`); err == nil {
		t.Error("a missing series has a value")
	}
}
