package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestObserve checks issue #9's observability end to end on two nodes
// started with --metrics-listen: after a transfer, /metrics on both shows
// the bytes (one side's tx, the other's rx) and a direct path with its RTT,
// and the drop counters by reason (policy included, at 0: no filter yet);
// `warren metrics` serves the same; `warren status` shows RTT, jitter and
// handshake age; `warren ping --until-direct` stops on a direct reply; a
// capture taken during a ping is a pcap holding the ICMP echo and reply,
// and an outer capture a pcapng annotated with the path; the debug bundle
// holds status, metrics and logs but neither the node's private key nor
// any auth or API key.
func TestObserve(t *testing.T) {
	l := newLab(t, "sqlite:"+filepath.Join(t.TempDir(), "warren.db"))
	l.startServer("--metrics-listen", "9101")
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	a := startNodeWith(l, "obsa", "--metrics-listen", "9100")
	b := startNodeWith(l, "obsb", "--metrics-listen", "127.0.0.1:9100")
	nodes := []*node{a, b}
	// obsa joins first and has its full map before obsb joins, so obsb's
	// joining reaches obsa as a delta (checked on the server's metrics).
	if _, err := a.up(key); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "obsa's first map sent", func() bool {
		return scrapeNS(t, l.srv.ns, "127.0.0.1:9101")[`warren_server_netmaps_sent_total{kind="full"}`] >= 1
	})
	if _, err := b.up(key); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, nodes, 1, 10*time.Second)
	av4, _ := a.ips()
	bv4, _ := b.ips()

	// ping --until-direct: stops at the first reply over a direct path.
	out := l.must(a.ns, "ping", "--socket", a.sock, "--until-direct", "--interval", "200ms", "obsb")
	if !strings.Contains(out, "via direct 198.18.") || strings.Contains(out, "no direct path") {
		t.Fatalf("ping --until-direct:\n%s", out)
	}

	// A transfer: 200 pings of 1000 bytes, each way 200 × 1028 bytes of IP.
	const count, size = 200, 1000
	if o, err := a.ns.Output("ping", "-q", "-c", strconv.Itoa(count), "-i", "0.005", "-s", strconv.Itoa(size), bv4); err != nil {
		t.Fatalf("ping: %v\n%s", err, o)
	}
	minBytes := float64(count * (size + 28))
	wait.For(t, 5*time.Second, "direct path reported by both nodes' metrics", func() bool {
		ma, mb := scrape(t, a), scrape(t, b)
		return ma.get(`warren_peer_path{key="`, `path="direct",peer="obsb"}`) == 1 &&
			mb.get(`warren_peer_path{key="`, `path="direct",peer="obsa"}`) == 1
	})
	ma, mb := scrape(t, a), scrape(t, b)
	for _, c := range []struct {
		m    metricSet
		name string
		peer string
	}{{ma, "warren_peer_tx_bytes_total", "obsb"}, {mb, "warren_peer_rx_bytes_total", "obsa"},
		{ma, "warren_peer_rx_bytes_total", "obsb"}, {mb, "warren_peer_tx_bytes_total", "obsa"}} {
		if v := c.m.get(c.name+`{key="`, `peer="`+c.peer+`"}`); v < minBytes {
			t.Errorf("%s{peer=%q} = %v, want at least %v", c.name, c.peer, v, minBytes)
		}
	}
	if v := ma.get(`warren_peer_tx_packets_total{key="`, `peer="obsb"}`); v < count {
		t.Errorf("tx packets %v, want at least %d", v, count)
	}
	if v := ma.get(`warren_peer_path_rtt_seconds{key="`, `peer="obsb"}`); v <= 0 || v > 1 {
		t.Errorf("path RTT %v s", v)
	}
	if v := ma.get(`warren_peer_handshake_age_seconds{key="`, `peer="obsb"}`); v < 0 || v > 120 {
		t.Errorf("handshake age %v s", v)
	}
	for _, reason := range []string{"bad_mac", "replay", "no_route", "policy", "no_session", "queue_full"} {
		if _, ok := ma[`warren_drops_total{reason="`+reason+`"}`]; !ok {
			t.Errorf("no warren_drops_total{reason=%q}", reason)
		}
	}
	// Offload batching is counted (the pings went through the TUN device).
	if ma[`warren_tun_packets_total{dir="read"}`] < count || ma[`warren_tun_calls_total{dir="write"}`] == 0 {
		t.Errorf("TUN offload counters: read packets %v, write calls %v", ma[`warren_tun_packets_total{dir="read"}`], ma[`warren_tun_calls_total{dir="write"}`])
	}
	if v := ma[`warren_drops_total{reason="policy"}`]; v != 0 {
		t.Errorf("policy drops %v without a policy engine", v)
	}
	// warren metrics: the same over the local API.
	mt := l.must(a.ns, "metrics", "--socket", a.sock)
	if !strings.Contains(mt, "warren_peer_rx_bytes_total{") || !strings.Contains(mt, "warren_queue_depth{queue=\"encrypt\"}") {
		t.Errorf("warren metrics lacks the peer and queue metrics:\n%.2000s", mt)
	}
	st := l.must(a.ns, "status", "--socket", a.sock)
	if !regexp.MustCompile(`direct 198\.18\.\d+\.2:\d+ \(rtt [0-9.]+ms, jitter [0-9.]+ms\), handshake `).MatchString(st) {
		t.Errorf("status lacks path RTT, jitter and handshake age:\n%s", st)
	}

	// Inner capture of obsb's traffic during a ping.
	capFile := filepath.Join(t.TempDir(), "inner.pcap")
	capCmd := startCapture(t, a, capFile, "--duration", "4s", "obsb")
	wait.For(t, 5*time.Second, "capture header", func() bool {
		fi, err := os.Stat(capFile)
		return err == nil && fi.Size() >= 24
	})
	if o, err := a.ns.Output("ping", "-c", "2", "-i", "0.2", bv4); err != nil {
		t.Fatalf("ping: %v\n%s", err, o)
	}
	if err := capCmd.Wait(); err != nil {
		t.Fatalf("capture: %v", err)
	}
	pkts := readPcap(t, capFile)
	var echo, reply int
	for _, p := range pkts {
		if len(p) < 28 || p[0]>>4 != 4 || p[9] != 1 {
			continue
		}
		src, dst := net.IP(p[12:16]).String(), net.IP(p[16:20]).String()
		switch {
		case p[20] == 8 && src == av4 && dst == bv4:
			echo++
		case p[20] == 0 && src == bv4 && dst == av4:
			reply++
		}
	}
	if echo < 2 || reply < 2 {
		t.Fatalf("capture of %d packets: %d echo requests %s→%s, %d replies; want 2 each", len(pkts), echo, av4, bv4, reply)
	}
	tcpdump(t, capFile, "ICMP echo request", "ICMP echo reply")

	// Outer capture: pcapng, each message annotated with peer and path.
	outerFile := filepath.Join(t.TempDir(), "outer.pcapng")
	capCmd = startCapture(t, a, outerFile, "--outer", "-c", "4", "--duration", "5s", "obsb")
	wait.For(t, 5*time.Second, "outer capture header", func() bool {
		fi, err := os.Stat(outerFile)
		return err == nil && fi.Size() >= 48
	})
	a.ns.Output("ping", "-c", "3", "-i", "0.2", bv4)
	if err := capCmd.Wait(); err != nil {
		t.Fatalf("outer capture: %v", err)
	}
	ng, err := os.ReadFile(outerFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(ng) < 48 || binary.LittleEndian.Uint32(ng) != 0x0A0D0D0A || !bytes.Contains(ng, []byte("obsb via direct 198.18.")) {
		t.Fatalf("outer capture is not an annotated pcapng (%d bytes): %q", len(ng), ng[:min(len(ng), 300)])
	}
	tcpdump(t, outerFile, "UDP, length")

	// DNS rebinding: a page that points a name of its own at a node's or
	// the server's metrics listener, or at the server, is refused.
	srvAddr := strings.TrimPrefix(l.srv.url, "http://")
	for _, c := range []struct {
		ns         *nettest.NS
		addr, path string
	}{{a.ns, "127.0.0.1:9100", "/metrics"}, {l.srv.ns, "127.0.0.1:9101", "/metrics"}, {l.srv.ns, srvAddr, "/warren/v1/key"}} {
		for _, host := range []string{"evil.example", "7f000001.rbndr.us:9100"} {
			if code, body := getNS(t, c.ns, c.addr, c.path, host); code != http.StatusMisdirectedRequest {
				t.Errorf("%s%s with Host %q: %d %s", c.addr, c.path, host, code, body)
			}
		}
		if code, body := getNS(t, c.ns, c.addr, c.path, c.addr); code != http.StatusOK {
			t.Errorf("%s%s with Host %q: %d %s", c.addr, c.path, c.addr, code, body)
		}
	}

	// The server's metrics: both nodes online, maps sent, latencies.
	ms := scrapeNS(t, l.srv.ns, "127.0.0.1:9101")
	if v := ms["warren_server_nodes_online"]; v != 2 {
		t.Errorf("warren_server_nodes_online = %v, want 2", v)
	}
	if ms[`warren_server_netmaps_sent_total{kind="full"}`] < 2 || ms[`warren_server_netmaps_sent_total{kind="delta"}`] < 1 {
		t.Errorf("netmaps sent: full %v, delta %v; want at least 2 full maps and a delta (the second node joining)",
			ms[`warren_server_netmaps_sent_total{kind="full"}`], ms[`warren_server_netmaps_sent_total{kind="delta"}`])
	}
	if ms["warren_server_stream_write_seconds_count"] < 3 || ms["warren_server_store_read_seconds_count"] < 1 {
		t.Errorf("latency histograms: stream writes %v, store reads %v", ms["warren_server_stream_write_seconds_count"], ms["warren_server_store_read_seconds_count"])
	}

	// The debug bundle: everything but secrets.
	bundle := filepath.Join(t.TempDir(), "bundle.txt")
	l.must(a.ns, "debug", "bundle", "--socket", a.sock, "-o", bundle)
	bb, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := os.ReadFile(filepath.Join(a.dir, "state", "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	privB64 := strings.TrimSpace(string(priv))
	if len(privB64) != 44 {
		t.Fatalf("node.key holds %q, want a base64 key", privB64)
	}
	for _, secret := range []string{privB64, "wkey_", "wapi_", key, l.srv.apiKey} {
		if bytes.Contains(bb, []byte(secret)) {
			t.Errorf("bundle contains a secret (%.8s...)", secret)
		}
	}
	for _, want := range []string{"===== status", "===== netmap (keys redacted)", "===== metrics", "warren_peer_rx_bytes_total", "===== logs", "daemon started", `"name": "obsb"`} {
		if !bytes.Contains(bb, []byte(want)) {
			t.Errorf("bundle lacks %q", want)
		}
	}
	// The same bundle as one JSON object (-json, single dash: the old
	// flag syntax keeps working).
	var jb struct {
		Header   map[string]string
		Sections map[string]json.RawMessage
		Logs     []string
	}
	jout := l.must(a.ns, "debug", "bundle", "-socket", a.sock, "-json")
	if err := json.Unmarshal([]byte(jout), &jb); err != nil {
		t.Fatalf("debug bundle --json: %v\n%.500s", err, jout)
	}
	var bst struct{ BackendState string }
	if err := json.Unmarshal(jb.Sections["status"], &bst); err != nil || bst.BackendState != "Running" || jb.Header["go"] == "" ||
		!bytes.Contains(jb.Sections["netmap"], []byte(`"obsb"`)) || !bytes.Contains(jb.Sections["metrics"], []byte("warren_peer_rx_bytes_total")) || len(jb.Logs) == 0 {
		t.Errorf("debug bundle --json: state %q (%v), header %v, %d log lines", bst.BackendState, err, jb.Header, len(jb.Logs))
	}
	for _, secret := range []string{privB64, "wkey_", "wapi_", key, l.srv.apiKey} {
		if strings.Contains(jout, secret) {
			t.Errorf("JSON bundle contains a secret (%.8s...)", secret)
		}
	}
}

// tcpdump reads a capture with tcpdump, when installed, and checks that
// its output holds each of want.
func tcpdump(t *testing.T, file string, want ...string) {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Logf("tcpdump not installed: %s not read with it", file)
		return
	}
	out, err := exec.Command("tcpdump", "-nr", file).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -nr %s: %v\n%s", file, err, out)
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("tcpdump -nr %s lacks %q:\n%s", file, w, out)
		}
	}
	t.Logf("tcpdump -nr %s:\n%s", filepath.Base(file), out)
}

// startNodeWith is lab.startNode with extra daemon flags.
func startNodeWith(l *lab, name string, extra ...string) *node {
	ns, addr := l.attach("mn")
	dir := l.t.TempDir()
	n := &node{l: l, name: name, ns: ns, dir: dir, sock: filepath.Join(dir, "warrend.sock"), under: addr}
	args := append([]string{"daemon", "--state-dir", filepath.Join(dir, "state"), "--socket", n.sock, "--tun", "warren0", "--verbose"}, extra...)
	n.cmd = ns.Start(l.t, warrenBin, args...)
	waitDaemonSocket(l.t, name, n.sock)
	l.nodes = append(l.nodes, n)
	return n
}

func startCapture(t *testing.T, n *node, file string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.ns.Name, warrenBin, "debug", "capture", "--socket", n.sock, "-o", file}, args...)...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("capture stderr: %s", errb.String())
		}
	})
	return cmd
}

// metricSet maps "name{labels}" to a value.
type metricSet map[string]float64

// get returns the value of the series whose key starts with prefix and
// ends with suffix (labels are sorted: key=, then others).
func (m metricSet) get(prefix, suffix string) float64 {
	for k, v := range m {
		if strings.HasPrefix(k, prefix) && strings.HasSuffix(k, suffix) {
			return v
		}
	}
	return -1
}

// scrape fetches http://127.0.0.1:9100/metrics inside the node's namespace.
func scrape(t *testing.T, n *node) metricSet {
	t.Helper()
	return scrapeNS(t, n.ns, "127.0.0.1:9100")
}

// getNS fetches http://addr/path inside ns with the given Host header and
// returns the status and body.
func getNS(t *testing.T, ns *nettest.NS, addr, path, host string) (int, []byte) {
	t.Helper()
	var code int
	var body []byte
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		code = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		t.Fatalf("GET http://%s%s in %s: %v", addr, path, ns.Name, err)
	}
	return code, body
}

// scrapeNS fetches http://addr/metrics inside ns.
func scrapeNS(t *testing.T, ns *nettest.NS, addr string) metricSet {
	t.Helper()
	code, body := getNS(t, ns, addr, "/metrics", "localhost")
	if code != 200 {
		t.Fatalf("scrape %s in %s: HTTP %d", addr, ns.Name, code)
	}
	m := metricSet{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// readPcap parses a classic pcap file (either byte order, micro or nano
// seconds) and returns its packets.
func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 {
		t.Fatalf("%s: %d bytes, no pcap header", path, len(b))
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		t.Fatalf("%s: bad pcap magic %x", path, b[:4])
	}
	if major, minor := bo.Uint16(b[4:]), bo.Uint16(b[6:]); major != 2 || minor != 4 {
		t.Fatalf("pcap version %d.%d", major, minor)
	}
	if lt := bo.Uint32(b[20:]); lt != 101 && lt != 228 && lt != 229 {
		t.Fatalf("pcap link type %d, want raw IP", lt)
	}
	var pkts [][]byte
	for off := 24; off < len(b); {
		if off+16 > len(b) {
			t.Fatalf("truncated record header at %d", off)
		}
		incl, orig := int(bo.Uint32(b[off+8:])), int(bo.Uint32(b[off+12:]))
		if incl > orig || off+16+incl > len(b) {
			t.Fatalf("bad record at %d: incl %d orig %d", off, incl, orig)
		}
		pkts = append(pkts, b[off+16:off+16+incl])
		off += 16 + incl
	}
	return pkts
}
