package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

type stats struct {
	P50 float64 `json:"p50Ms"`
	P99 float64 `json:"p99Ms"`
	Max float64 `json:"maxMs"`
	N   int     `json:"n"`
}

type changeResult struct {
	Kind      string  `json:"kind"`
	ToAllMs   float64 `json:"toAllMs"`
	Delivered int     `json:"delivered"`
	TimedOut  bool    `json:"timedOut,omitempty"`
}

// phase is what one phase cost: server CPU and memory, the bench
// process's CPU, and what the nodes received.
type phase struct {
	AllFullSeconds   float64 `json:"allFullSeconds,omitempty"`
	ConvergedSeconds float64 `json:"convergedSeconds,omitempty"`
	ServerCPUSeconds float64 `json:"serverCPUSeconds"`
	ServerRSSMiB     float64 `json:"serverRSSMiB"` // VmRSS at the end of the phase
	ServerHWMMiB     float64 `json:"serverHWMMiB"` // VmHWM: peak during the phase
	ServerWriteMiB   float64 `json:"serverWriteMiB"`
	BenchCPUSeconds  float64 `json:"benchCPUSeconds"` // the simulated nodes
	Messages         int64   `json:"messages"`
	FullMaps         int64   `json:"fullMaps"`
	Deltas           int64   `json:"deltas"`
	BytesMiB         float64 `json:"bytesMiB"` // control protocol plaintext received by the nodes
	DialErrors       int64   `json:"dialErrors,omitempty"`
	// StoreReads are the server's reads of the store behind map changes
	// (server.Stats.StoreRead: a pass over the change log, or a reload
	// or one node's re-read before), StoreReadMs their total time.
	StoreReads  int64   `json:"storeReads"`
	StoreReadMs float64 `json:"storeReadMs"`
	// Replicas is each server child's share when there are several (the
	// Server* figures above are then the sum of CPU and bytes and the
	// largest RSS and peak).
	Replicas []replicaPhase `json:"replicas,omitempty"`
}

// replicaPhase is what one replica's process cost in a phase.
type replicaPhase struct {
	CPUSeconds float64 `json:"cpuSeconds"`
	RSSMiB     float64 `json:"rssMiB"`
	HWMMiB     float64 `json:"hwmMiB"`
}

type result struct {
	Date         string         `json:"date"`
	Nodes        int            `json:"nodes"`
	Replicas     int            `json:"replicas"`
	Changes      int            `json:"changes"`
	DB           string         `json:"db"`
	Cores        int            `json:"cores"`
	SetupSeconds float64        `json:"setupSeconds"`
	Connect      phase          `json:"connect"`
	Changes_     phase          `json:"changePhase"`
	ToAll        stats          `json:"timeToAll"`
	PerNode      stats          `json:"perNodeDelivery"`
	TimedOut     int            `json:"timedOut"`
	PerChange    []changeResult `json:"perChange"`
	Reconnects   int64          `json:"reconnects"`
	ApplyErrors  int64          `json:"applyErrors"`
	Storm        *stormResult   `json:"storm,omitempty"`

	deliveries []time.Duration
}

// procStat is what /proc/PID tells about a process.
type procStat struct {
	cpu      float64 // utime+stime, seconds
	rss, hwm float64 // MiB
	wchar    float64 // MiB written (write syscalls, sockets included)
}

// readProc reads /proc/PID/{stat,status,io}; pid may be "self".
func readProc(pid string) procStat {
	var p procStat
	if b, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			// After the comm: state is field 3, utime 14, stime 15.
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				p.cpu = (ut + st) / 100 // USER_HZ is 100 on Linux
			}
		}
	}
	kb := func(file, key string) float64 {
		b, err := os.ReadFile("/proc/" + pid + "/" + file)
		if err != nil {
			return 0
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, key); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					n, _ := strconv.ParseFloat(f[0], 64)
					return n
				}
			}
		}
		return 0
	}
	p.rss = kb("status", "VmRSS:") / 1024
	p.hwm = kb("status", "VmHWM:") / 1024
	p.wchar = kb("io", "wchar:") / (1 << 20)
	return p
}

// phaseStart resets the server children's peak RSS (clear_refs 5) and
// reads them.
func (b *bench) phaseStart() []procStat {
	for _, k := range b.kids {
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", k.pid), []byte("5"), 0)
	}
	return b.readServers()
}

// readServers reads every server child's /proc figures.
func (b *bench) readServers() []procStat {
	ps := make([]procStat, len(b.kids))
	for i, k := range b.kids {
		ps[i] = readProc(strconv.Itoa(k.pid))
	}
	return ps
}

type counterSnap struct {
	msgs, bytes, full, deltas int64
	storeReads, storeReadNs   int64
}

func (b *bench) snapCounters() counterSnap {
	c := counterSnap{msgs: b.cnt.msgs.Load(), bytes: b.cnt.bytes.Load(), full: b.cnt.full.Load(), deltas: b.cnt.deltas.Load()}
	c.storeReads, c.storeReadNs = b.serverStoreStats()
	return c
}

// serverStoreStats asks the server child how often it read the store
// behind map changes, and for how long in all.
func (b *bench) serverStoreStats() (n, ns int64) {
	for _, f := range b.ask("storestats", "storestats", 2) {
		if f == nil {
			continue
		}
		a, _ := strconv.ParseInt(f[0], 10, 64)
		c, _ := strconv.ParseInt(f[1], 10, 64)
		n, ns = n+a, ns+c
	}
	return n, ns
}

func (ph *phase) fill(s0, s1 []procStat, self0, self1 procStat, c0, c1 counterSnap) {
	for i := range s1 {
		r := replicaPhase{CPUSeconds: s1[i].cpu - s0[i].cpu, RSSMiB: s1[i].rss, HWMMiB: s1[i].hwm}
		ph.ServerCPUSeconds += r.CPUSeconds
		ph.ServerRSSMiB = max(ph.ServerRSSMiB, r.RSSMiB)
		ph.ServerHWMMiB = max(ph.ServerHWMMiB, r.HWMMiB)
		ph.ServerWriteMiB += s1[i].wchar - s0[i].wchar
		if len(s1) > 1 {
			ph.Replicas = append(ph.Replicas, r)
		}
	}
	ph.BenchCPUSeconds = self1.cpu - self0.cpu
	ph.Messages = c1.msgs - c0.msgs
	ph.FullMaps = c1.full - c0.full
	ph.Deltas = c1.deltas - c0.deltas
	ph.BytesMiB = float64(c1.bytes-c0.bytes) / (1 << 20)
	ph.StoreReads = c1.storeReads - c0.storeReads
	ph.StoreReadMs = float64(c1.storeReadNs-c0.storeReadNs) / 1e6
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "controlbench: %d nodes, %d changes, store %s, %d replica(s), %d cores, %s\n\n", r.Nodes, r.Changes, r.DB, r.Replicas, r.Cores, r.Date)
	fmt.Fprintf(w, "setup (register %d nodes in the store, not measured further): %.1f s\n\n", r.Nodes, r.SetupSeconds)
	fmt.Fprintf(w, "%-36s %14s %14s\n", "", "connect", "changes")
	row := func(name, format string, a, b any) {
		fmt.Fprintf(w, "%-36s %14s %14s\n", name, fmt.Sprintf(format, a), fmt.Sprintf(format, b))
	}
	c, k := &r.Connect, &r.Changes_
	fmt.Fprintf(w, "%-36s %14.2f %14s\n", "all N have full map (s)", c.AllFullSeconds, "")
	fmt.Fprintf(w, "%-36s %14.2f %14s\n", "all N see all peers online (s)", c.ConvergedSeconds, "")
	row("server CPU (s, utime+stime, sum)", "%.2f", c.ServerCPUSeconds, k.ServerCPUSeconds)
	row("server VmHWM, phase peak (MiB, max)", "%.0f", c.ServerHWMMiB, k.ServerHWMMiB)
	row("server VmRSS, end of phase (MiB)", "%.0f", c.ServerRSSMiB, k.ServerRSSMiB)
	for i := range c.Replicas {
		if i < len(k.Replicas) {
			row(fmt.Sprintf("  replica %d CPU (s)", i), "%.2f", c.Replicas[i].CPUSeconds, k.Replicas[i].CPUSeconds)
			row(fmt.Sprintf("  replica %d VmHWM (MiB)", i), "%.0f", c.Replicas[i].HWMMiB, k.Replicas[i].HWMMiB)
			row(fmt.Sprintf("  replica %d VmRSS, end (MiB)", i), "%.0f", c.Replicas[i].RSSMiB, k.Replicas[i].RSSMiB)
		}
	}
	row("server bytes written (MiB)", "%.1f", c.ServerWriteMiB, k.ServerWriteMiB)
	row("server store reads (map changes)", "%d", c.StoreReads, k.StoreReads)
	row("  their time (ms)", "%.1f", c.StoreReadMs, k.StoreReadMs)
	row("bench (nodes) CPU (s)", "%.2f", c.BenchCPUSeconds, k.BenchCPUSeconds)
	row("messages received", "%d", c.Messages, k.Messages)
	row("  full maps", "%d", c.FullMaps, k.FullMaps)
	row("  deltas", "%d", c.Deltas, k.Deltas)
	row("payload received (MiB)", "%.1f", c.BytesMiB, k.BytesMiB)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "change → all %d nodes applied it (%d changes):  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n",
		r.Nodes, r.ToAll.N, r.ToAll.P50, r.ToAll.P99, r.ToAll.Max)
	fmt.Fprintf(w, "per-node delivery (%d deliveries):             p50 %.2f ms  p99 %.2f ms  max %.2f ms\n",
		r.PerNode.N, r.PerNode.P50, r.PerNode.P99, r.PerNode.Max)
	byKind := map[string][]float64{}
	var kinds []string
	for _, pc := range r.PerChange {
		if _, ok := byKind[pc.Kind]; !ok {
			kinds = append(kinds, pc.Kind)
		}
		byKind[pc.Kind] = append(byKind[pc.Kind], pc.ToAllMs)
	}
	for _, kd := range kinds {
		var s []string
		for _, v := range byKind[kd] {
			s = append(s, fmt.Sprintf("%.1f", v))
		}
		fmt.Fprintf(w, "  %-8s to-all ms: %s\n", kd, strings.Join(s, " "))
	}
	fmt.Fprintf(w, "timed out: %d   stream drops/reconnects: %d   apply errors: %d   dial errors: %d\n",
		r.TimedOut, r.Reconnects, r.ApplyErrors, r.Connect.DialErrors)
	if r.Storm != nil {
		r.Storm.print(w, r.Nodes)
	}
}
