package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// setupTitle is a setup's column heading.
var setupTitle = map[string]string{
	"raw":          "raw veth",
	"wireguard-go": "wireguard-go",
	"warren":       "warren",
}

// metric is one row of the table: how to read it from a round's results
// and which direction is better.
type metric struct {
	label  string
	unit   string
	digits int
	lower  bool // lower is better: the best round is the minimum
	tunnel bool // only meaningful for tunnel setups
	rounds bool // shown per round only (it describes the run, not a setup)
	get    func(r *roundResult) (float64, bool)
}

func metrics(udpRate string) []metric {
	var ms []metric
	for _, tt := range tcpTests {
		ms = append(ms, metric{label: tt.label, unit: "Gbit/s", digits: 2, get: func(r *roundResult) (float64, bool) {
			t, ok := r.TCP[tt.key]
			return t.BitsPerSecond / 1e9, ok
		}})
	}
	ms = append(ms,
		metric{label: "UDP " + udpRate + " A→B received", unit: "Gbit/s", digits: 2, get: func(r *roundResult) (float64, bool) {
			if r.UDP == nil {
				return 0, false
			}
			return r.UDP.BitsPerSecond / 1e9, true
		}},
		metric{label: "UDP " + udpRate + " A→B loss", unit: "%", digits: 2, lower: true, get: func(r *roundResult) (float64, bool) {
			if r.UDP == nil {
				return 0, false
			}
			return r.UDP.LostPercent, true
		}},
	)
	for _, tt := range tcpTests {
		ms = append(ms, metric{label: "CPU, " + tt.label, unit: "CPU-s/GB", digits: 2, lower: true, tunnel: true,
			get: func(r *roundResult) (float64, bool) {
				t, ok := r.TCP[tt.key]
				return t.CPUSecPerGB, ok && t.CPUSecPerGB > 0
			}})
	}
	for _, tt := range tcpTests {
		ms = append(ms, metric{label: "host steal, " + tt.label, unit: "%", digits: 0, lower: true, rounds: true,
			get: func(r *roundResult) (float64, bool) {
				t, ok := r.TCP[tt.key]
				return t.StealPercent, ok
			}})
	}
	for _, p := range []struct {
		name string
		get  func(r *roundResult) *pingStats
	}{
		{"ping idle", func(r *roundResult) *pingStats { return r.PingIdle }},
		{"ping under load", func(r *roundResult) *pingStats { return r.PingLoad }},
	} {
		for _, s := range []struct {
			name string
			get  func(p *pingStats) float64
		}{
			{"avg", func(p *pingStats) float64 { return p.Avg }},
			{"p50", func(p *pingStats) float64 { return p.P50 }},
			{"p99", func(p *pingStats) float64 { return p.P99 }},
			{"max", func(p *pingStats) float64 { return p.Max }},
		} {
			ms = append(ms, metric{label: p.name + " " + s.name, unit: "ms", digits: 3, lower: true,
				get: func(r *roundResult) (float64, bool) {
					ps := p.get(r)
					if ps == nil {
						return 0, false
					}
					return s.get(ps), true
				}})
		}
	}
	return ms
}

// best is the best value of m over the rounds of setup: the maximum for
// throughput, the minimum for costs, loss and latency.
func best(m metric, results []roundResult, setup string) (float64, bool) {
	v, found := 0.0, false
	for i := range results {
		r := &results[i]
		if r.Setup != setup {
			continue
		}
		x, ok := m.get(r)
		if !ok || math.IsNaN(x) {
			continue
		}
		if !found || (m.lower && x < v) || (!m.lower && x > v) {
			v, found = x, true
		}
	}
	return v, found
}

// ratio renders warren/wireguard-go for a metric.
func ratio(m metric, w, g float64) string {
	hint := ""
	if m.lower {
		hint = " (lower is better)"
	}
	switch {
	case g == 0 && w == 0:
		return "equal (both 0)" + hint
	case g == 0:
		return "n/a (wireguard-go 0)" + hint
	}
	return fmt.Sprintf("%.2f×%s", w/g, hint)
}

// renderTable renders the markdown table: one row per metric, one column
// per setup with its best round, and the warren/wireguard-go ratio when
// both were measured.
func renderTable(results []roundResult, setups []string, udpRate string) string {
	withRatio := slices.Contains(setups, "warren") && slices.Contains(setups, "wireguard-go")
	var b strings.Builder
	b.WriteString("| metric |")
	for _, s := range setups {
		fmt.Fprintf(&b, " %s |", title(s))
	}
	if withRatio {
		b.WriteString(" warren/wireguard-go |")
	}
	b.WriteString("\n|---|")
	for range setups {
		b.WriteString("---:|")
	}
	if withRatio {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, m := range metrics(udpRate) {
		if m.rounds {
			continue
		}
		fmt.Fprintf(&b, "| %s (%s) |", m.label, m.unit)
		vals := map[string]float64{}
		have := map[string]bool{}
		for _, s := range setups {
			v, ok := best(m, results, s)
			switch {
			case ok:
				vals[s], have[s] = v, true
				fmt.Fprintf(&b, " %.*f |", m.digits, v)
			case m.tunnel && s == "raw":
				b.WriteString(" – |")
			default:
				b.WriteString(" error |")
			}
		}
		if withRatio {
			if have["warren"] && have["wireguard-go"] {
				fmt.Fprintf(&b, " %s |", ratio(m, vals["warren"], vals["wireguard-go"]))
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// renderRounds renders every round's value of every metric, to show the
// spread that the best-of table hides.
func renderRounds(results []roundResult, udpRate string) string {
	var b strings.Builder
	b.WriteString("| metric |")
	for _, r := range results {
		fmt.Fprintf(&b, " %s r%d |", title(r.Setup), r.Round)
	}
	b.WriteString("\n|---|")
	for range results {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, m := range metrics(udpRate) {
		fmt.Fprintf(&b, "| %s (%s) |", m.label, m.unit)
		for i := range results {
			if v, ok := m.get(&results[i]); ok {
				fmt.Fprintf(&b, " %.*f |", m.digits, v)
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func title(setup string) string {
	if t, ok := setupTitle[setup]; ok {
		return t
	}
	return setup
}
