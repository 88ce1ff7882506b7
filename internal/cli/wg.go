package cli

import (
	"errors"
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

	"github.com/spf13/cobra"

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
	envLogOpts    = "WARREN_WG_LOG"         // internal: the parent's --log-level,--log-format
	envCPUProfile = "WARREN_CPUPROFILE"     // write a pprof CPU profile here until exit
)

func wgCmd(s *streams) *cobra.Command {
	var foreground bool
	var lo logOptions
	c := &cobra.Command{
		Use:   "wg [flags] IFNAME",
		Short: "run a WireGuard interface (drop-in for wireguard-go)",
		Long: `Creates the TUN interface IFNAME and serves its WireGuard configuration
socket (/var/run/wireguard/IFNAME.sock) for wg(8) and wg-quick(8), like
wireguard-go: in the background unless -f (or WG_PROCESS_FOREGROUND=1).
Invoked as warren-wg (a symlink), the binary acts as 'warren wg', for
WG_QUICK_USERSPACE_IMPLEMENTATION. Without --log-level, LOG_LEVEL
(verbose|debug, info, error, silent) sets the level, as for wireguard-go.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("exactly one interface name expected")
			}
			if err := uapi.CheckIfname(args[0]); err != nil {
				return usageErr{err.Error()}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return exit(runWG(args[0], foreground, cmd.Flags().Changed("log-level"), lo, s.stderr))
		},
	}
	c.Flags().BoolVarP(&foreground, "foreground", "f", false, "stay in the foreground")
	lo.bind(c.Flags(), "error")
	return c
}

func runWG(name string, foreground, levelFlag bool, lo logOptions, stderr io.Writer) int {
	if v, ok := os.LookupEnv(envLogOpts); ok && os.Getenv(envReadyFD) != "" {
		level, format, _ := strings.Cut(v, ",")
		if level != "" {
			lo.level, levelFlag = level, true
		}
		lo.format = format
		os.Unsetenv(envLogOpts)
	}
	if os.Getenv(envForeground) == "1" {
		foreground = true
	}
	level, err := parseLevel(lo.level)
	if !levelFlag {
		level, err = parseLogLevel(os.Getenv(envLogLevel))
	}
	if err == nil {
		_, err = lo.handler(io.Discard, level)
	}
	if err != nil {
		fmt.Fprintf(stderr, "warren wg: %v\n", err)
		return 2
	}
	if !foreground && os.Getenv(envReadyFD) == "" {
		return daemonize(name, levelFlag, lo, stderr)
	}
	return serveWG(name, level, levelFlag, lo, stderr)
}

// parseLogLevel reads wireguard-go's LOG_LEVEL.
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
func daemonize(name string, levelFlag bool, lo logOptions, stderr io.Writer) int {
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
	// The child's command line stays `warren wg IFNAME` (what ps and
	// scripts look for); the log options go in the environment.
	level := ""
	if levelFlag {
		level = lo.level
	}
	cmd := exec.Command(self, "wg", name)
	cmd.Env = append(os.Environ(), envReadyFD+"=3", envLogOpts+"="+level+","+lo.format)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if logging(levelFlag) {
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

// logging reports whether a background `warren wg` keeps logging to the
// terminal it was started from: when a level was asked for.
func logging(levelFlag bool) bool { return levelFlag || os.Getenv(envLogLevel) != "" }

func serveWG(name string, level slog.Level, levelFlag bool, lo logOptions, stderr io.Writer) int {
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
	h, _ := lo.handler(stderr, level) // checked by runWG
	log := slog.New(h).With("interface", name)

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
		if devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil && !logging(levelFlag) {
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
