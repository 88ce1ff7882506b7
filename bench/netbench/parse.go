package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// iperfResult is what one iperf3 client run measured, from the receiver's
// side: bytes that arrived and the rate they arrived at.
type iperfResult struct {
	Bytes         float64 `json:"bytes"`           // received
	Seconds       float64 `json:"seconds"`         // receiver's measuring time
	BitsPerSecond float64 `json:"bits_per_second"` // received
	SentBytes     float64 `json:"sent_bytes"`
	LostPercent   float64 `json:"lost_percent,omitempty"` // UDP only
	JitterMs      float64 `json:"jitter_ms,omitempty"`    // UDP only
	Retransmits   int     `json:"retransmits,omitempty"`  // TCP only
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         float64 `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	JitterMs      float64 `json:"jitter_ms"`
	LostPackets   int64   `json:"lost_packets"`
	Packets       int64   `json:"packets"`
	LostPercent   float64 `json:"lost_percent"`
	Retransmits   int     `json:"retransmits"`
}

type iperfJSON struct {
	Start struct {
		TestStart struct {
			Protocol string `json:"protocol"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Sum         *iperfSum `json:"sum"`
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// errServerBusy is iperf3's refusal while the server still finishes the
// previous test; the run is worth retrying.
var errServerBusy = errors.New("iperf3 server busy")

// parseIperf parses the output of `iperf3 -c ... -J` (TCP or UDP, either
// direction): the receiver's bytes and rate, and for UDP the loss.
func parseIperf(data []byte) (iperfResult, error) {
	var j iperfJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if j.Error != "" {
		if strings.Contains(j.Error, "busy") {
			return iperfResult{}, fmt.Errorf("%w: %s", errServerBusy, j.Error)
		}
		return iperfResult{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	recv := j.End.SumReceived
	if recv == nil {
		recv = j.End.Sum // old UDP output: one summary for both sides
	}
	if recv == nil {
		return iperfResult{}, errors.New("iperf3 JSON: no end.sum_received")
	}
	r := iperfResult{Bytes: recv.Bytes, Seconds: recv.Seconds, BitsPerSecond: recv.BitsPerSecond}
	if j.End.SumSent != nil {
		r.SentBytes = j.End.SumSent.Bytes
		r.Retransmits = j.End.SumSent.Retransmits
	}
	if strings.EqualFold(j.Start.TestStart.Protocol, "UDP") {
		// The loss and jitter are the server's, reported back to the
		// client; "sum" carries them in every iperf3 version.
		s := j.End.Sum
		if s == nil {
			s = recv
		}
		r.LostPercent, r.JitterMs = s.LostPercent, s.JitterMs
		if s.Packets > 0 {
			r.LostPercent = 100 * float64(s.LostPackets) / float64(s.Packets)
		}
	}
	if r.Bytes <= 0 || r.Seconds <= 0 {
		return r, fmt.Errorf("iperf3: nothing received (bytes %.0f in %.2f s)", r.Bytes, r.Seconds)
	}
	return r, nil
}

var pingTimeRE = regexp.MustCompile(`icmp_seq=(\d+).*\btime[=<]\s*([0-9.]+)\s*ms`)

// parsePing returns the round-trip times, in milliseconds and in order, of
// every reply in the output of iputils ping. Duplicates (DUP!) are skipped.
func parsePing(out string) []float64 {
	var rtts []float64
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "DUP!") {
			continue
		}
		m := pingTimeRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		rtts = append(rtts, v)
	}
	return rtts
}

// pingStats summarises probe RTTs (ms).
type pingStats struct {
	Sent    int       `json:"sent"`
	Samples []float64 `json:"samples_ms"`
	Avg     float64   `json:"avg_ms"`
	P50     float64   `json:"p50_ms"`
	P99     float64   `json:"p99_ms"`
	Max     float64   `json:"max_ms"`
}

// Lost is the number of probes without a reply.
func (p pingStats) Lost() int { return max(p.Sent-len(p.Samples), 0) }

func summarizePing(sent int, samples []float64) (pingStats, error) {
	p := pingStats{Sent: sent, Samples: samples}
	if len(samples) == 0 {
		return p, fmt.Errorf("ping: no replies to %d probes", sent)
	}
	sorted := append([]float64(nil), samples...)
	sort.Float64s(sorted)
	var sum float64
	for _, v := range sorted {
		sum += v
	}
	p.Avg = sum / float64(len(sorted))
	p.P50 = percentile(sorted, 50)
	p.P99 = percentile(sorted, 99)
	p.Max = sorted[len(sorted)-1]
	return p, nil
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, pct float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(pct / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// parseProcStat returns utime+stime, in clock ticks, from the contents of
// /proc/PID/stat. The command name (field 2) may hold spaces and parentheses,
// so the fields are counted from the last ')'.
func parseProcStat(data string) (uint64, error) {
	i := strings.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no ')'")
	}
	f := strings.Fields(data[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after comm", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat stime: %w", err)
	}
	return ut + st, nil
}

// parseMachineStat reads the first line of /proc/stat ("cpu user nice
// system idle iowait irq softirq steal guest guest_nice", in ticks). Guest
// time is already counted in user and nice, so it is left out of the total.
func parseMachineStat(data string) (cpuTimes, error) {
	line, _, _ := strings.Cut(data, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: first line %q is not the cpu total", line)
	}
	var c cpuTimes
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat field %d: %w", i+1, err)
		}
		c.total += v
		if i == 7 {
			c.steal = v
		}
	}
	return c, nil
}
