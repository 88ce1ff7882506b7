package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Addresses of the lab: the veth "wire" and the tunnel on top of it.
const (
	underlayA = "198.18.0.1"
	underlayB = "198.18.0.2"
	tunnelA   = "100.64.0.1"
	tunnelB   = "100.64.0.2"
	wgPort    = "51820"
	vethMTU   = "1500"
	tunnelMTU = "1420"
)

// lab is two network namespaces, A and B, joined by a veth pair, plus the
// processes started in them. close removes all of it.
type lab struct {
	nsA, nsB string
	nsS      string // the relay lab's router and servers (meshlab.go); "" otherwise
	nsC      string // the relay lab's peer relay node (meshlab.go); "" otherwise
	tmp      string // keys, mode 0700 directory

	mu          sync.Mutex
	procs       []*proc
	iperfServer *proc
	seq         int // for unique interface names
}

// proc is a background process in a namespace.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

func newLab(ctx context.Context, prefix string) (l *lab, err error) {
	pid := os.Getpid()
	l = &lab{nsA: fmt.Sprintf("%s-a-%d", prefix, pid), nsB: fmt.Sprintf("%s-b-%d", prefix, pid)}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.tmp, err = os.MkdirTemp("", "netbench-"); err != nil {
		return l, err
	}
	for _, ns := range []string{l.nsA, l.nsB} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return l, err
		}
		if err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return l, err
		}
	}
	// veth names are per namespace, so fixed ones do not collide.
	steps := [][]string{
		{"ip", "-n", l.nsA, "link", "add", "nbveth0", "mtu", vethMTU, "type", "veth",
			"peer", "name", "nbveth1", "mtu", vethMTU, "netns", l.nsB},
		{"ip", "-n", l.nsA, "addr", "add", underlayA + "/24", "dev", "nbveth0"},
		{"ip", "-n", l.nsB, "addr", "add", underlayB + "/24", "dev", "nbveth1"},
		{"ip", "-n", l.nsA, "link", "set", "nbveth0", "up"},
		{"ip", "-n", l.nsB, "link", "set", "nbveth1", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return l, err
		}
	}
	if err := waitFor(ctx, 5*time.Second, "veth up and reachable", func() bool {
		return l.inA(ctx, "ping", "-c", "1", "-W", "1", underlayB).Run() == nil
	}); err != nil {
		return l, err
	}
	return l, nil
}

// close kills every process still running and deletes the namespaces (and
// with them the veth pair and any tunnel interface). It is safe to call more
// than once.
func (l *lab) close() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for _, p := range procs {
		p.stop(3 * time.Second)
	}
	for _, ns := range []string{l.nsA, l.nsB, l.nsC, l.nsS} {
		if ns == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join("/var/run/netns", ns)); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			logf("cleanup: ip netns del %s: %v %s", ns, err, bytes.TrimSpace(out))
		}
	}
	if l.tmp != "" {
		os.RemoveAll(l.tmp)
		l.tmp = ""
	}
}

func (l *lab) inA(ctx context.Context, args ...string) *exec.Cmd { return inNS(ctx, l.nsA, args) }
func (l *lab) inB(ctx context.Context, args ...string) *exec.Cmd { return inNS(ctx, l.nsB, args) }

// inNS runs a command in namespace ns. `ip netns exec` execs the command
// in place, so the process id is the command's own (needed for /proc).
func inNS(ctx context.Context, ns string, args []string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// start starts a background process in namespace ns, owned by the lab.
func (l *lab) start(ns, name string, env []string, args ...string) (*proc, error) {
	cmd := inNS(context.Background(), ns, args)
	cmd.Env = append(os.Environ(), env...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// stopProc stops p and forgets it.
func (l *lab) stopProc(p *proc) {
	p.stop(3 * time.Second)
	l.mu.Lock()
	for i, q := range l.procs {
		if q == p {
			l.procs = append(l.procs[:i], l.procs[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, and SIGKILL if p has not exited after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(grace):
		logf("cleanup: %s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// tunnel is one running VPN setup: a process in each namespace.
type tunnel struct {
	impl       string
	ifA, ifB   string
	procA      *proc
	procB      *proc
	configured bool
}

func (t *tunnel) pids() []int { return []int{t.procA.cmd.Process.Pid, t.procB.cmd.Process.Pid} }

// startTunnel runs one VPN implementation in each namespace in the
// foreground, configures both ends with wg(8) and waits for the handshake.
// argv is the command without the interface name, e.g. [bin/warren wg -f].
func (l *lab) startTunnel(ctx context.Context, impl string, argv []string) (t *tunnel, err error) {
	l.mu.Lock()
	l.seq++
	seq := l.seq
	l.mu.Unlock()
	// /var/run/wireguard is shared by all namespaces: names must be unique
	// machine-wide, and at most 15 bytes.
	pid := os.Getpid()
	t = &tunnel{impl: impl, ifA: fmt.Sprintf("nb%da%d", pid, seq), ifB: fmt.Sprintf("nb%db%d", pid, seq)}
	defer func() {
		if err != nil {
			l.stopTunnel(t)
		}
	}()
	keys := map[string]string{}
	pubs := map[string]string{}
	for _, side := range []string{"a", "b"} {
		priv, err := output(ctx, nil, "wg", "genkey")
		if err != nil {
			return t, err
		}
		f := filepath.Join(l.tmp, fmt.Sprintf("%s-%d-%s.key", impl, seq, side))
		if err := os.WriteFile(f, []byte(priv), 0o600); err != nil {
			return t, err
		}
		pub, err := output(ctx, strings.NewReader(priv), "wg", "pubkey")
		if err != nil {
			return t, err
		}
		keys[side], pubs[side] = f, strings.TrimSpace(pub)
	}
	env := []string{"LOG_LEVEL=error"}
	if t.procA, err = l.start(l.nsA, impl+" A", env, append(argv, t.ifA)...); err != nil {
		return t, err
	}
	if t.procB, err = l.start(l.nsB, impl+" B", env, append(argv, t.ifB)...); err != nil {
		return t, err
	}
	ends := []struct {
		ns, ifc, key, peer, peerTun, peerUL, addr string
		p                                         *proc
	}{
		{l.nsA, t.ifA, keys["a"], pubs["b"], tunnelB, underlayB, tunnelA, t.procA},
		{l.nsB, t.ifB, keys["b"], pubs["a"], tunnelA, underlayA, tunnelB, t.procB},
	}
	for _, e := range ends {
		sock := "/var/run/wireguard/" + e.ifc + ".sock"
		if err := waitFor(ctx, 10*time.Second, impl+" socket "+sock, func() bool {
			_, err := os.Stat(sock)
			return err == nil || e.p.exited()
		}); err != nil {
			return t, err
		}
		if e.p.exited() {
			return t, fmt.Errorf("%s exited at start:\n%s", e.p.name, e.p.out.String())
		}
		steps := [][]string{
			{"wg", "set", e.ifc, "private-key", e.key, "listen-port", wgPort,
				"peer", e.peer, "allowed-ips", e.peerTun + "/32", "endpoint", e.peerUL + ":" + wgPort},
			{"ip", "addr", "add", e.addr + "/24", "dev", e.ifc},
			{"ip", "link", "set", e.ifc, "mtu", tunnelMTU, "up"},
		}
		for _, s := range steps {
			if err := run(ctx, append([]string{"ip", "netns", "exec", e.ns}, s...)...); err != nil {
				return t, err
			}
		}
	}
	t.configured = true
	if err := waitFor(ctx, 15*time.Second, impl+" handshake (ping through the tunnel)", func() bool {
		return l.inA(ctx, "ping", "-c", "1", "-W", "1", tunnelB).Run() == nil
	}); err != nil {
		return t, fmt.Errorf("%w\n%s A:\n%s\n%s B:\n%s", err, impl, t.procA.out.String(), impl, t.procB.out.String())
	}
	return t, nil
}

// stopTunnel stops both VPN processes and removes what they may have left.
func (l *lab) stopTunnel(t *tunnel) {
	for _, p := range []*proc{t.procA, t.procB} {
		if p != nil {
			l.stopProc(p)
		}
	}
	for _, e := range []struct{ ns, ifc string }{{l.nsA, t.ifA}, {l.nsB, t.ifB}} {
		_ = exec.Command("ip", "-n", e.ns, "link", "del", e.ifc).Run()
		_ = os.Remove("/var/run/wireguard/" + e.ifc + ".sock")
	}
}

// run runs a command and reports its output if it fails.
func run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// output runs a command with the given stdin and returns its stdout.
func output(ctx context.Context, stdin *strings.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// waitFor polls cond until it holds, the timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ctx.Err()
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
