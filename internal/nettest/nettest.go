// Package nettest is the network-namespace lab of Warren's integration tests:
// it creates throwaway Linux network namespaces, wires them together with
// veth pairs, runs commands and background processes inside them, and runs Go
// code in-process inside a namespace (on a locked OS thread switched into it
// with setns), so that tests open real TUN devices and real UDP sockets
// without ever touching the host's own interfaces, routes or resolver. Every
// namespace, process and interface it creates is removed by t.Cleanup. Tests
// that need it call NeedNetns first: without root or the ip tool they are
// skipped, unless WARREN_REQUIRE_NETNS=1 makes that a failure (for CI).
package nettest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// RequireEnv is the environment variable that turns a missing namespace
// capability from a skip into a test failure when set to "1".
const RequireEnv = "WARREN_REQUIRE_NETNS"

// NeedNetns skips the test when network namespaces cannot be used here (not
// root, or no ip tool). With WARREN_REQUIRE_NETNS=1 it fails the test instead.
func NeedNetns(t testing.TB) {
	t.Helper()
	var reason string
	if os.Geteuid() != 0 {
		reason = "network namespace tests need root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		reason = "network namespace tests need the ip tool (iproute2)"
	}
	if reason == "" {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (and %s=1)", reason, RequireEnv)
	}
	t.Skip(reason)
}

// NS is a network namespace created for one test. It is deleted, and the
// processes started in it are killed, when the test ends.
type NS struct {
	Name string

	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

// NewNS creates a namespace named prefix plus a short unique suffix, brings
// its loopback up and registers its removal with t.Cleanup.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	NeedNetns(t)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s%d%s", prefix, os.Getpid()%1000, hex.EncodeToString(b[:]))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	ns := &NS{Name: name}
	t.Cleanup(func() { ns.cleanup(t) })
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

func (ns *NS) cleanup(t testing.TB) {
	ns.mu.Lock()
	procs := ns.procs
	ns.procs = nil
	ns.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("netns %s: process %v did not exit after kill", ns.Name, p.cmd.Args)
		}
		if t.Failed() {
			t.Logf("netns %s: output of %v:\n%s", ns.Name, p.cmd.Args, p.out.String())
		}
	}
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v\n%s", ns.Name, err, out)
	}
}

func (ns *NS) command(args []string) *exec.Cmd {
	full := append([]string{"netns", "exec", ns.Name}, args...)
	return exec.Command("ip", full...)
}

// Run runs a command inside the namespace and fails the test, showing the
// command's combined output, if it does not succeed.
func (ns *NS) Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := ns.command(args).CombinedOutput(); err != nil {
		t.Fatalf("netns %s: %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
}

// Output runs a command inside the namespace and returns its combined output.
func (ns *NS) Output(args ...string) (string, error) {
	out, err := ns.command(args).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns %s: %s: %w", ns.Name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Start starts a background process inside the namespace. Its output is kept
// and shown if the test fails; it is killed when the test ends.
func (ns *NS) Start(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := ns.command(append([]string{name}, args...))
	out := &lockedBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("netns %s: start %s: %v", ns.Name, name, err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	ns.mu.Lock()
	ns.procs = append(ns.procs, p)
	ns.mu.Unlock()
	return cmd
}

// Do runs fn on an OS thread switched into the namespace, so that sockets and
// devices fn opens belong to it. fn runs on its own goroutine: it must report
// failure by its error, not with t.Fatal. Goroutines fn starts do not inherit
// the namespace, but file descriptors it opens stay bound to it.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := doLocked(ns.Name, fn)
		// The thread goes back to the runtime only if it is in its original
		// namespace again; otherwise it dies with this goroutine.
		if back {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// doLocked switches the locked thread into netns name, runs fn and switches
// back. It returns whether the thread is in its original namespace, and fn's
// error or that of the switching.
func doLocked(name string, fn func() error) (back bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open own netns: %w", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open netns %s: %w", name, err)
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		// A failed setns leaves the thread where it was.
		return true, fmt.Errorf("setns %s: %w", name, err)
	}
	ferr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		return false, errors.Join(ferr, fmt.Errorf("setns back from %s: %w", name, err))
	}
	return true, ferr
}

// Veth creates a veth pair with end aIf in a and end bIf in b, assigns the
// given CIDR addresses (IPv6 ones without duplicate address detection) and
// brings both ends up. The pair goes away with the namespaces.
func Veth(t testing.TB, a *NS, aIf string, aAddrs []string, b *NS, bIf string, bAddrs []string) {
	t.Helper()
	a.Run(t, "ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, side := range []struct {
		ns    *NS
		ifc   string
		addrs []string
	}{{a, aIf, aAddrs}, {b, bIf, bAddrs}} {
		for _, addr := range side.addrs {
			AddAddr(t, side.ns, side.ifc, addr)
		}
		side.ns.Run(t, "ip", "link", "set", side.ifc, "up")
	}
	// Until the kernel's link watcher has seen the carrier the device drops
	// what it is given (the first neighbour solicitation would be retried
	// only a second later), so wait for both ends to be operational.
	WaitOperUp(t, a, aIf)
	WaitOperUp(t, b, bIf)
	for _, addr := range aAddrs {
		WaitLocalRoute(t, a, addr)
	}
	for _, addr := range bAddrs {
		WaitLocalRoute(t, b, addr)
	}
}

// WaitOperUp waits up to five seconds for interface ifc in ns to be
// operationally up, and fails the test otherwise.
func WaitOperUp(t testing.TB, ns *NS, ifc string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := ns.Output("ip", "-o", "link", "show", "dev", ifc)
		if err == nil && strings.Contains(out, " state UP ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("netns %s: %s not operationally up: %v\n%s", ns.Name, ifc, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AddAddr assigns a CIDR address to interface ifc in ns; an IPv6 address is
// added with nodad so that it is usable at once.
func AddAddr(t testing.TB, ns *NS, ifc, cidr string) {
	t.Helper()
	args := []string{"ip", "addr", "add", cidr, "dev", ifc}
	if !strings.Contains(cidr, ":") {
		ns.Run(t, args...)
		return
	}
	ns.Run(t, append(args, "nodad")...)
	if out, err := ns.Output("ip", "-o", "link", "show", "dev", ifc); err == nil && isAdminUp(out) {
		WaitLocalRoute(t, ns, cidr)
	}
}

func isAdminUp(linkShow string) bool {
	_, rest, ok := strings.Cut(linkShow, "<")
	flags, _, _ := strings.Cut(rest, ">")
	return ok && slices.Contains(strings.Split(flags, ","), "UP")
}

// WaitLocalRoute waits for the local-table route of an IPv6 address (CIDR
// or bare) on an interface that is up. The kernel adds the address at
// once (a socket can bind to it) but its local route only from the DAD
// worker, even with nodad; until then packets to the address are dropped
// as Ip6InAddrErrors. IPv4 addresses need no wait.
func WaitLocalRoute(t testing.TB, ns *NS, cidr string) {
	t.Helper()
	if !strings.Contains(cidr, ":") {
		return
	}
	s, _, _ := strings.Cut(cidr, "/")
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("WaitLocalRoute %s: %v", cidr, err)
	}
	addr := a.String()
	if !wait.Poll(5*time.Second, func() bool {
		out, err := ns.Output("ip", "-6", "route", "show", "table", "local", addr)
		return err == nil && strings.Contains(out, addr)
	}) {
		t.Fatalf("netns %s: no local route for %s 5 s after adding it", ns.Name, addr)
	}
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
