package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// meshSetup is one product running in the relay lab: whatever relays in
// S (charged with the nodes' CPU time) and a node in A and in B.
type meshSetup struct {
	name    string
	relay   *proc // the process forwarding the relayed packets
	nodeA   *proc
	nodeB   *proc
	targetB string // B's tunnel IPv4 address, the iperf3 target
	path    string // how A reaches B, as the product itself reports it
	procs   []*proc
	cleanup []func()
	// drops reads the product's own drop counters on the relayed path
	// (empty if it has none to show).
	drops func() string
	// guard, if set, is called before each test; what it returns is
	// called after the test, and an error from it fails the test (the
	// path measured was not the one the setup is about).
	guard  func() func() error
	warren *warrenMesh // Warren's setups: how to reach the server and the nodes
}

// warrenMesh is what a Warren setup's further steps need: the admin CLI,
// the auth key and each node's daemon socket by host name.
type warrenMesh struct {
	bin, dir, authKey string
	admin             func(args ...string) (string, error)
	socks             map[string]string
	prof              func(what string) []string
}

func (m *meshSetup) pids() []int {
	return []int{m.relay.cmd.Process.Pid, m.nodeA.cmd.Process.Pid, m.nodeB.cmd.Process.Pid}
}

// stop stops every process of the setup and removes what they left.
func (l *lab) stopMesh(m *meshSetup) {
	for i := len(m.procs) - 1; i >= 0; i-- {
		l.stopProc(m.procs[i])
	}
	for _, f := range m.cleanup {
		f()
	}
}

func (l *lab) startMeshProc(m *meshSetup, ns, name string, env []string, args ...string) (*proc, error) {
	p, err := l.start(ns, name, env, args...)
	if err == nil {
		m.procs = append(m.procs, p)
	}
	return p, err
}

const (
	warrenServerURL = "http://" + meshServer + ":8080"
	warrenRelayURL  = "http://" + meshServer + ":8443"
)

// startWarren runs Warren in the relay lab: the coordination server in S
// with its embedded relay (standalone false: `warren server --relay`) or
// with a standalone `warren relay` beside it as the only relay of the map,
// and a daemon in A and in B joined to it. rate, if set, is the relays'
// per-node rate limit (--relay-rate / --rate). With profDir, each Warren
// process writes a CPU profile there (WARREN_CPUPROFILE) when stopped.
func (l *lab) startWarren(ctx context.Context, bin, name string, standalone bool, rate, profDir string) (m *meshSetup, err error) {
	m = &meshSetup{name: name}
	defer func() {
		if err != nil {
			l.stopMesh(m)
		}
	}()
	dir := filepath.Join(l.tmp, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return m, err
	}
	m.cleanup = append(m.cleanup, func() { os.RemoveAll(dir) })
	srvDir := filepath.Join(dir, "server")
	server := []string{bin, "server", "--listen", meshServer + ":8080", "--data-dir", srvDir, "--public-url", warrenServerURL,
		"--metrics-listen", "127.0.0.1:9091"}
	embedded := []string{"--relay", "--stun-listen", meshServer + ":3478"}
	if rate != "" {
		embedded = append(embedded, "--relay-rate", rate)
	}
	prof := func(what string) []string {
		if profDir == "" {
			return nil
		}
		return []string{"WARREN_CPUPROFILE=" + filepath.Join(profDir, name+"-"+what+".prof")}
	}
	startServer := func(extra ...string) (*proc, error) {
		p, err := l.startMeshProc(m, l.nsS, "warren server", prof("server"), append(server, extra...)...)
		if err != nil {
			return nil, err
		}
		return p, waitTCP(ctx, l.nsS, meshServer+":8080", "warren server listening", p)
	}
	var srv *proc
	if !standalone {
		srv, err = startServer(embedded...)
	} else {
		srv, err = startServer()
	}
	if err != nil {
		return m, err
	}
	m.relay = srv
	apiKey, err := output(ctx, nil, bin, "server", "apikey", "create", "--data-dir", srvDir)
	if err != nil {
		return m, err
	}
	admin := func(args ...string) (string, error) {
		return inNSOutput(ctx, l.nsS, append([]string{bin, "admin", "--server", warrenServerURL, "--api-key", strings.TrimSpace(apiKey), "--insecure"}, args...)...)
	}
	if _, err := admin("users", "create", "bench"); err != nil {
		return m, err
	}
	authKey, err := admin("authkeys", "create", "--user", "bench", "--reusable", "--expiration", "2h")
	if err != nil {
		return m, err
	}
	if standalone {
		relayKey, err := output(ctx, nil, bin, "server", "apikey", "create", "--scope", "relay", "--data-dir", srvDir)
		if err != nil {
			return m, err
		}
		args := []string{bin, "relay", "--listen", meshServer + ":8443", "--stun-listen", meshServer + ":3478",
			"--data-dir", filepath.Join(dir, "relay"), "--server", warrenServerURL, "--relay-key", strings.TrimSpace(relayKey),
			"--insecure", "--poll", "500ms", "--metrics-listen", "127.0.0.1:9092"}
		if rate != "" {
			args = append(args, "--rate", rate)
		}
		rp, err := l.startMeshProc(m, l.nsS, "warren relay", prof("relay"), args...)
		if err != nil {
			return m, err
		}
		if err := waitTCP(ctx, l.nsS, meshServer+":8443", "warren relay listening", rp); err != nil {
			return m, err
		}
		// The relay made its key at start; `warren relay key` prints it
		// (its log lines are for people, not for parsing).
		pub, err := output(ctx, nil, bin, "relay", "key", "--data-dir", filepath.Join(dir, "relay"))
		pub = strings.TrimSpace(pub)
		if err != nil || pub == "" {
			return m, fmt.Errorf("warren relay key: %v\n%s", err, rp.out.String())
		}
		// The map offers only the standalone relay: restart the server with it.
		mapFile := filepath.Join(dir, "relays.json")
		rm := fmt.Sprintf(`{"regions":[{"id":2,"code":"bench","url":%q,"public_key":%q,"stun":%q}]}`, warrenRelayURL, pub, meshServer+":3478")
		if err := os.WriteFile(mapFile, []byte(rm), 0o600); err != nil {
			return m, err
		}
		l.stopProc(srv)
		if _, err := startServer("--relay-map", mapFile); err != nil {
			return m, err
		}
		m.relay = rp
	}
	m.warren = &warrenMesh{bin: bin, dir: dir, authKey: authKey, admin: admin, socks: map[string]string{}, prof: prof}
	if m.nodeA, err = l.startWarrenNode(ctx, m, l.nsA, "a"); err != nil {
		return m, err
	}
	if m.nodeB, err = l.startWarrenNode(ctx, m, l.nsB, "b"); err != nil {
		return m, err
	}
	socks := [2]string{m.warren.socks["a"], m.warren.socks["b"]}
	relayMetrics := "127.0.0.1:9091"
	if standalone {
		relayMetrics = "127.0.0.1:9092"
	}
	m.drops = func() string {
		var parts []string
		for i, ns := range []string{l.nsA, l.nsB} {
			out, _ := inNSOutput(ctx, ns, bin, "metrics", "--socket", socks[i])
			parts = append(parts, []string{"A", "B"}[i]+": "+metricLines(out, "warren_relay_packets_total"))
		}
		out, _ := inNSOutput(ctx, l.nsS, "curl", "-s", "http://"+relayMetrics+"/metrics")
		return strings.Join(append(parts, "relay: "+metricLines(out, "warren_relay_server_drops_total")), "; ")
	}
	if m.targetB, err = inNSOutput(ctx, l.nsB, bin, "ip", "-4", "--socket", socks[1]); err != nil {
		return m, err
	}
	if err := waitFor(ctx, 30*time.Second, "A pinging B through Warren", func() bool {
		return l.inA(ctx, "ping", "-c", "1", "-W", "1", m.targetB).Run() == nil
	}); err != nil {
		return m, err
	}
	// The path as Warren reports it: it must be the relay.
	err = waitFor(ctx, 20*time.Second, "Warren's status saying A reaches B over the relay", func() bool {
		m.path = warrenPath(ctx, l.nsA, bin, socks[0], "b")
		return strings.HasPrefix(m.path, "relay")
	})
	return m, err
}

// startWarrenNode runs `warren daemon` (TUN) for host in namespace ns and
// brings it up on m's server; extra are more `warren up` flags.
func (l *lab) startWarrenNode(ctx context.Context, m *meshSetup, ns, host string, extra ...string) (*proc, error) {
	w := m.warren
	sock := filepath.Join(w.dir, host+".sock")
	tun := fmt.Sprintf("wrb%s%d", host, os.Getpid()%100000)
	p, err := l.startMeshProc(m, ns, "warren daemon "+host, w.prof("daemon-"+host), w.bin, "daemon", "--state-dir", filepath.Join(w.dir, host),
		"--socket", sock, "--tun", tun)
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 15*time.Second, "daemon socket "+host, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil || p.exited()
	}); err != nil || p.exited() {
		return nil, fmt.Errorf("daemon %s: %v\n%s", host, err, p.out.String())
	}
	up := []string{w.bin, "up", "--socket", sock, "--server", warrenServerURL, "--auth-key", w.authKey, "--hostname", host, "--timeout", "30s"}
	if _, err := inNSOutput(ctx, ns, append(up, extra...)...); err != nil {
		return nil, err
	}
	w.socks[host] = sock
	return p, nil
}

// warrenPath is the path to the peer named peer in `warren status
// --json`, e.g. "relay home", "peer-relay c" or "direct 198.18.2.2:41641".
func warrenPath(ctx context.Context, ns, bin, sock, peer string) string {
	out, err := inNSOutput(ctx, ns, bin, "status", "--json", "--socket", sock)
	if err != nil {
		return "?"
	}
	var st struct {
		Peers []struct {
			Name, Path, PathAddr, PathRelay string
		}
	}
	if json.Unmarshal([]byte(out), &st) != nil {
		return "?"
	}
	for _, p := range st.Peers {
		if p.Name == peer {
			return strings.TrimSpace(p.Path + " " + p.PathRelay + p.PathAddr)
		}
	}
	return "?"
}

// metricLines condenses the Prometheus lines of one metric to
// "label=value ...".
func metricLines(text, name string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		_, rest, _ := strings.Cut(line, "=\"")
		label, value, _ := strings.Cut(rest, "\"} ")
		out = append(out, label+"="+value)
	}
	return strings.Join(out, " ")
}
