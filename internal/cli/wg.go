package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/device"
	"github.com/warrenmesh/warren/internal/tun"
	"github.com/warrenmesh/warren/internal/uapi"
	"github.com/warrenmesh/warren/internal/udp"
)

// Environment understood by `warren wg`, as by wireguard-go.
const (
	envForeground = "WG_PROCESS_FOREGROUND" // "1": do not daemonize
	envTunFD      = "WG_TUN_FD"             // an already-open TUN queue to use
	envUAPIFD     = "WG_UAPI_FD"            // an already-listening UAPI socket
	envLogLevel   = "LOG_LEVEL"             // verbose|debug, error, silent
	envReadyFD    = "WARREN_WG_READY_FD"    // internal: pipe to report start-up to the parent
	envCPUProfile = "WARREN_CPUPROFILE"     // write a pprof CPU profile here until exit
)

func runWG(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wg", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var foreground bool
	fs.BoolVar(&foreground, "f", false, "stay in the foreground")
	fs.BoolVar(&foreground, "foreground", false, "stay in the foreground")
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprintln(stderr, "usage: warren wg [-f|--foreground] IFNAME")
			return 0
		}
		fmt.Fprintf(stderr, "warren wg: %v (usage: warren wg [-f|--foreground] IFNAME)\n", err)
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "warren wg: exactly one interface name expected")
		return 2
	}
	name := fs.Arg(0)
	if err := uapi.CheckIfname(name); err != nil {
		fmt.Fprintf(stderr, "warren wg: %v\n", err)
		return 2
	}
	if os.Getenv(envForeground) == "1" {
		foreground = true
	}
	level, err := parseLogLevel(os.Getenv(envLogLevel))
	if err != nil {
		fmt.Fprintf(stderr, "warren wg: %v\n", err)
		return 2
	}
	if !foreground && os.Getenv(envReadyFD) == "" {
		return daemonize(name, stderr)
	}
	return serveWG(name, level, stderr)
}

func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "error":
		return slog.LevelError, nil
	case "verbose", "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "silent":
		return slog.LevelError + 100, nil
	}
	return 0, fmt.Errorf("%s=%q: want verbose, info, error or silent", envLogLevel, s)
}

// daemonize starts this program again in the background and waits until it
// reports that the interface and its socket exist (so that wg-quick can
// configure it as soon as we return), or why it could not start.
func daemonize(name string, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "warren wg: cannot find own executable: %v\n", err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "warren wg: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, "wg", name)
	cmd.Env = append(os.Environ(), envReadyFD+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if os.Getenv(envLogLevel) != "" {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "warren wg: cannot start background process: %v\n", err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(io.LimitReader(r, 4096))
	r.Close()
	if string(msg) != "ok\n" {
		cmd.Wait()
		text := strings.TrimSpace(string(msg))
		if text == "" {
			text = "background process exited during start-up"
		}
		fmt.Fprintf(stderr, "warren wg: %s\n", text)
		return 1
	}
	cmd.Process.Release()
	return 0
}

func serveWG(name string, level slog.Level, stderr io.Writer) int {
	var ready *os.File
	if fd := os.Getenv(envReadyFD); fd != "" {
		n, err := strconv.Atoi(fd)
		if err == nil {
			ready = os.NewFile(uintptr(n), "ready")
		}
		os.Unsetenv(envReadyFD)
	}
	fail := func(format string, args ...any) int {
		msg := fmt.Sprintf(format, args...)
		if ready != nil {
			fmt.Fprintln(ready, msg)
			ready.Close()
		}
		fmt.Fprintf(stderr, "warren wg: %s\n", msg)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("interface", name)

	td, err := openTUN(name)
	if err != nil {
		return fail("%v", err)
	}
	realName, err := td.Name()
	if err != nil {
		td.Close()
		return fail("%v", err)
	}
	l, err := openUAPI(realName)
	if err != nil {
		td.Close()
		return fail("%v", err)
	}
	tr := udp.New()
	tr.SetLogger(log)
	inline, err := device.DatapathFromEnv()
	if err != nil {
		l.Close()
		td.Close()
		return fail("%v", err)
	}
	if inline && runtime.NumCPU() <= 2 && os.Getenv("GOMAXPROCS") == "" {
		// On one or two cores the run-to-completion datapath is two
		// goroutines (TUN reader, UDP receiver) whose system calls carry
		// the kernel's share of the work; a second P for Go code only
		// adds idle spinning next to that work (measured in
		// docs/PERFORMANCE.md). GOMAXPROCS set explicitly wins.
		runtime.GOMAXPROCS(1)
	}
	dev := device.New(td, tr, device.Options{Logger: log, RunToCompletion: inline})
	log.Info("device started", "datapath", map[bool]string{true: "inline", false: "pipeline"}[inline], "procs", runtime.GOMAXPROCS(0))
	if path := os.Getenv(envCPUProfile); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			log.Error("cannot start CPU profile", "err", err)
		} else {
			defer stop()
		}
	}

	if ready != nil {
		fmt.Fprint(ready, "ok\n")
		ready.Close()
		// Detach from the parent's terminal: nothing more goes to it.
		if devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil && os.Getenv(envLogLevel) == "" {
			syscall.Dup2(int(devnull.Fd()), 0)
			syscall.Dup2(int(devnull.Fd()), 1)
			syscall.Dup2(int(devnull.Fd()), 2)
		}
	}

	uapiDone := make(chan error, 1)
	go func() { uapiDone <- uapi.Serve(l, dev, log) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case <-dev.TUNGone():
		log.Info("interface removed, shutting down")
	case err := <-uapiDone:
		log.Error("configuration socket failed", "err", err)
	}
	l.Close()
	if os.Getenv(envUAPIFD) != "" {
		os.Remove(uapi.SocketPath(realName)) // an inherited listener cannot remove its own path
	}
	done := make(chan struct{})
	go func() { dev.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.Error("device did not close in time")
		return 1
	}
	return 0
}

// profileFromEnv starts a CPU profile into $WARREN_CPUPROFILE, if set,
// for the long-running commands (server, relay, daemon; wg has its own),
// and returns what stops it (written on a clean exit: SIGINT or SIGTERM).
func profileFromEnv(stderr io.Writer) func() {
	path := os.Getenv(envCPUProfile)
	if path == "" {
		return func() {}
	}
	stop, err := startCPUProfile(path)
	if err != nil {
		fmt.Fprintf(stderr, "warren: cannot start the CPU profile: %v\n", err)
		return func() {}
	}
	return stop
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func openTUN(name string) (tun.Device, error) {
	if fd := os.Getenv(envTunFD); fd != "" {
		n, err := strconv.Atoi(fd)
		if err != nil {
			return nil, fmt.Errorf("%s=%q is not a file descriptor", envTunFD, fd)
		}
		return tun.CreateFromFile(os.NewFile(uintptr(n), "tun"), device.DefaultMTU)
	}
	td, err := tun.Create(name, device.DefaultMTU)
	if err != nil {
		return nil, fmt.Errorf("cannot create TUN device %q: %w", name, err)
	}
	return td, nil
}

func openUAPI(name string) (net.Listener, error) {
	if fd := os.Getenv(envUAPIFD); fd != "" {
		n, err := strconv.Atoi(fd)
		if err != nil {
			return nil, fmt.Errorf("%s=%q is not a file descriptor", envUAPIFD, fd)
		}
		f := os.NewFile(uintptr(n), "uapi")
		l, err := net.FileListener(f)
		f.Close()
		return l, err
	}
	l, err := uapi.Listen(name)
	if errors.Is(err, uapi.ErrInUse) {
		return nil, fmt.Errorf("interface %q is already served by another process", name)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot create configuration socket: %w", err)
	}
	return l, nil
}
