package mesh

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// attacker drives the rogue member (test/mesh/hostile) over its stdin and
// stdout: one command a line, one answer line each.
type attacker struct {
	t       *testing.T
	under   netip.Addr // its underlay address
	stdin   io.Writer
	replies chan string
	log     *syncBuffer // its stderr
	mu      sync.Mutex  // one command at a time
	joined  string      // its answer to wait-peers
}

// joinedField is field name of its wait-peers answer.
func (a *attacker) joinedField(name string) string {
	for _, f := range strings.Fields(a.joined) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	a.t.Fatalf("no %s= in %q", name, a.joined)
	return ""
}

// tunnelAddr is M's IPv4 tunnel address.
func (a *attacker) tunnelAddr() string { return a.joinedField("addr") }

// arrivals counts, with nftables in a node's namespace (independently of
// Warren), what reaches the node's UDP port from the attacker: "from_m",
// datagrams from M's underlay address; "m_disco", disco messages whose
// sender key is M's, whatever their source address (spoofed ones too).
// Counting them shows an attack did reach the node, so that a test that
// passes is not one the attack missed.
type arrivals struct {
	n *node
}

func (a *attacker) countArrivals(t *testing.T, n *node) *arrivals {
	disco := a.joinedField("disco")
	rules := fmt.Sprintf(`table inet hostilecount {
	counter from_m {}
	counter m_disco {}
	chain in {
		type filter hook input priority -300;
		ip saddr %s udp dport 41641 counter name "from_m"
		udp dport 41641 @th,64,48 0x%x @th,112,64 0x%s counter name "m_disco"
	}
}
`, a.under, "WRNdsc", disco[:16])
	path := filepath.Join(t.TempDir(), "count.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	n.ns.Run(t, "nft", "-f", path)
	return &arrivals{n: n}
}

// get returns counter name's packets (-1 if it cannot be read).
func (c *arrivals) get(name string) int {
	out, err := c.n.ns.Output("nft", "list", "counter", "inet", "hostilecount", name)
	if err != nil {
		return -1
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "packets" && i+1 < len(f) {
			n, err := strconv.Atoi(f[i+1])
			if err == nil {
				return n
			}
		}
	}
	return -1
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startAttacker builds the hostile node and starts it in ns (underlay
// address under), joining with key.
func (l *lab) startAttacker(ns *nettest.NS, under, key string) *attacker {
	t := l.t
	bin := filepath.Join(t.TempDir(), "hostile")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/warrenmesh/warren/test/mesh/hostile").CombinedOutput(); err != nil {
		t.Fatalf("go build hostile: %v\n%s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, bin, "--server", l.srv.url, "--auth-key", key,
		"--hostname", "m", "--underlay", under)
	a := &attacker{t: t, under: netip.MustParseAddr(under), replies: make(chan string, 16), log: &syncBuffer{}}
	var err error
	if a.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = a.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a.replies <- sc.Text()
		}
		close(a.replies)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("hostile node's log:\n%s", a.log.String())
		}
	})
	return a
}

// do runs one attacker command and returns its answer ("ok CMD ...").
func (a *attacker) do(cmd string, timeout time.Duration) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := fmt.Fprintln(a.stdin, cmd); err != nil {
		return "", fmt.Errorf("hostile %q: %v", cmd, err)
	}
	select {
	case r, ok := <-a.replies:
		if !ok {
			return "", fmt.Errorf("hostile %q: the attacker exited", cmd)
		}
		if !strings.HasPrefix(r, "ok ") {
			return r, fmt.Errorf("hostile %q: %s", cmd, r)
		}
		return r, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("hostile %q: no answer in %v", cmd, timeout)
	}
}

func (a *attacker) must(cmd string, timeout time.Duration) string {
	a.t.Helper()
	r, err := a.do(cmd, timeout)
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

// start runs an attacker command in the background; wait returns its
// answer.
func (a *attacker) start(cmd string, timeout time.Duration) (wait func() string) {
	type res struct {
		r   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := a.do(cmd, timeout)
		ch <- res{r, err}
	}()
	return func() string {
		a.t.Helper()
		r := <-ch
		if r.err != nil {
			a.t.Fatal(r.err)
		}
		return r.r
	}
}

// pairStats is what a pingMonitor saw for one ordered pair.
type pairStats struct {
	sent, lost, run, longestRun int
	lastErr                     string
}

// pingMonitor pings every ordered pair of honest nodes (IPv4, through the
// tunnel) over and over until stopped.
type pingMonitor struct {
	mu       sync.Mutex
	stats    map[string]*pairStats
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// halt stops the monitor's goroutines and waits for them.
func (m *pingMonitor) halt() {
	m.stopOnce.Do(func() { close(m.stop) })
	m.wg.Wait()
}

func startPingMonitor(t *testing.T, nodes []*node) *pingMonitor {
	m := &pingMonitor{stats: map[string]*pairStats{}, stop: make(chan struct{})}
	t.Cleanup(m.halt) // also when the test stops early
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			bV4, _ := b.ips()
			name := a.name + "→" + b.name
			s := &pairStats{}
			m.stats[name] = s
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				for {
					select {
					case <-m.stop:
						return
					default:
					}
					err := a.pingOnce(bV4, 2*time.Second)
					m.mu.Lock()
					s.sent++
					if err != nil {
						s.lost++
						s.run++
						s.longestRun = max(s.longestRun, s.run)
						s.lastErr = err.Error()
					} else {
						s.run = 0
					}
					m.mu.Unlock()
					select {
					case <-m.stop:
						return
					case <-time.After(300 * time.Millisecond):
					}
				}
			}()
		}
	}
	return m
}

// check stops the monitor and fails the test for every pair that lost
// three pings in a row or more than a third of them: an honest pair must
// keep working while a member attacks.
func (m *pingMonitor) check(t *testing.T, phase string) {
	t.Helper()
	m.halt()
	var names []string
	for n := range m.stats {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := m.stats[n]
		t.Logf("%s: ping %s: %d sent, %d lost (longest run %d)", phase, n, s.sent, s.lost, s.longestRun)
		if s.sent == 0 || s.longestRun >= 3 || 3*s.lost > s.sent {
			t.Errorf("%s: ping %s lost: %d of %d pings lost, %d in a row (last: %s)", phase, n, s.lost, s.sent, s.longestRun, s.lastErr)
		}
	}
}

// pathWatch polls the honest nodes' status until stopped and records every
// time a node's engine endpoint or path to an honest peer was the
// attacker's address.
type pathWatch struct {
	mu         sync.Mutex
	violations map[string]string // "a→v" → first observation
	polls      int
	stop       chan struct{}
	stopOnce   sync.Once
	done       chan struct{}
}

// halt stops the watch and waits for it.
func (w *pathWatch) halt() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

func startPathWatch(t *testing.T, nodes []*node, m netip.Addr) *pathWatch {
	w := &pathWatch{violations: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(w.halt) // also when the test stops early
	honest := map[string]bool{}
	for _, n := range nodes {
		honest[n.name] = true
	}
	go func() {
		defer close(w.done)
		for {
			for _, n := range nodes {
				st, err := n.status()
				if err != nil {
					continue
				}
				w.mu.Lock()
				w.polls++
				for _, p := range st.Peers {
					if !honest[p.Name] {
						continue
					}
					for what, addr := range map[string]string{"engine endpoint (curAddr)": p.CurrentAddr, "path address": p.PathAddr} {
						ap, err := netip.ParseAddrPort(addr)
						if err == nil && ap.Addr().Unmap() == m {
							key := n.name + "→" + p.Name
							if w.violations[key] == "" {
								w.violations[key] = fmt.Sprintf("%s's %s for %s moved to M's address %s (path %s)", n.name, what, p.Name, addr, p.Path)
							}
						}
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w
}

// check stops the watch and fails for every path seen at M's address.
func (w *pathWatch) check(t *testing.T, phase string) {
	t.Helper()
	w.halt()
	t.Logf("%s: %d status polls", phase, w.polls)
	var keys []string
	for k := range w.violations {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Errorf("%s: %s", phase, w.violations[k])
	}
}

// iperfPort numbers each measurement's iperf3 server: a client that was
// killed (a black-holed path) leaves its server busy, so every measurement
// gets its own.
var iperfPort atomic.Int32

// iperf runs iperf3 from a to server node b (at b's address addr) for secs
// seconds and returns the received rate in Mbit/s (0 and the reason when
// it failed).
func iperf(t *testing.T, a, b *node, addr string, secs int) (float64, string) {
	port := strconv.Itoa(5201 + int(iperfPort.Add(1)))
	srv := b.ns.Start(t, "iperf3", "-s", "-1", "-B", addr, "-p", port)
	defer func() { srv.Process.Kill() }()
	if !wait.Poll(5*time.Second, func() bool {
		out, err := b.ns.Output("ss", "-Hltn", "sport = :"+port)
		return err == nil && strings.Contains(out, ":"+port)
	}) {
		return 0, "iperf3 server not listening on " + b.name
	}
	out, err := a.ns.Output("timeout", strconv.Itoa(secs+15), "iperf3", "-c", addr, "-p", port, "-t", strconv.Itoa(secs), "-J", "--connect-timeout", "3000")
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	json.Unmarshal([]byte(out), &r)
	if err != nil || r.Error != "" {
		return 0, fmt.Sprintf("iperf3 failed: %v %s", err, r.Error)
	}
	return r.End.SumReceived.BitsPerSecond / 1e6, ""
}

// metric returns the value of the first `warren metrics` sample of n whose
// line starts with prefix (-1 if none).
func (n *node) metric(prefix string) float64 {
	out, err := warren(n.ns, "metrics", "--socket", n.sock)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// udpSink counts the datagrams a UDP port in a node's namespace receives,
// by the attacker's payload kind.
type udpSink struct {
	mu      sync.Mutex
	spoofed []string     // payloads of packets with a spoofed source
	genuine map[bool]int // from M's own address, by family (true: IPv4)
	pc      net.PacketConn
}

func startUDPSink(t *testing.T, n *node, port int) *udpSink {
	s := &udpSink{genuine: map[bool]int{}}
	if err := n.ns.Do(func() (err error) {
		s.pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port)) // IPv4 and IPv6
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := s.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := string(buf[:k])
			s.mu.Lock()
			switch {
			case strings.HasPrefix(msg, "hostile-spoof"):
				s.spoofed = append(s.spoofed, fmt.Sprintf("%q from %v", msg, from))
			case strings.HasPrefix(msg, "hostile-genuine"):
				ap, _ := netip.ParseAddrPort(from.String())
				s.genuine[ap.Addr().Unmap().Is4()]++
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// counts returns how many genuine packets arrived over IPv4 and IPv6, and
// the spoofed ones.
func (s *udpSink) counts() (genuine4, genuine6 int, spoofed []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.genuine[true], s.genuine[false], append([]string(nil), s.spoofed...)
}

// beyondSink counts the "hostile-beyond to DST" packets a node delivered,
// by DST.
type beyondSink struct {
	mu sync.Mutex
	by map[string]int
	pc net.PacketConn
}

func startBeyondSink(t *testing.T, n *node, port int) *beyondSink {
	s := &beyondSink{by: map[string]int{}}
	if err := n.ns.Do(func() (err error) {
		s.pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, _, err := s.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if dst, ok := strings.CutPrefix(string(buf[:k]), "hostile-beyond to "); ok {
				s.mu.Lock()
				s.by[dst]++
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *beyondSink) count(dst string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.by[dst]
}
