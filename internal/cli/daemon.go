package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/daemon"
	"github.com/warrenmesh/warren/internal/localapi"
)

func init() {
	register(command{"daemon", "daemon [FLAGS]       run the node agent (see 'warren daemon --help')", runDaemon})
}

// envSocket overrides the default local API socket for every node verb.
const envSocket = "WARREN_SOCKET"

func defaultSocket() string {
	if s := os.Getenv(envSocket); s != "" {
		return s
	}
	if os.Geteuid() != 0 {
		// An ordinary user's userspace daemon, if one runs.
		if dir, err := userStateDir(); err == nil {
			if s := userSocket(dir); socketExists(s) {
				return s
			}
		}
	}
	return localapi.DefaultSocket
}

// userStateDir is a userspace daemon's default state directory:
// $XDG_STATE_HOME/warren, else ~/.local/state/warren.
func userStateDir() (string, error) {
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "warren"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "warren"), nil
}

// userSocket is a userspace daemon's default local API socket:
// $XDG_RUNTIME_DIR/warren/warrend.sock, else in its state directory.
func userSocket(stateDir string) string {
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return filepath.Join(x, "warren", "warrend.sock")
	}
	return filepath.Join(stateDir, "warrend.sock")
}

func socketExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg daemon.Config
	var port uint
	var verbose bool
	fs.StringVar(&cfg.StateDir, "state-dir", daemon.DefaultStateDir, "directory for the node key, preferences and last network map")
	fs.StringVar(&cfg.Socket, "socket", defaultSocket(), "local API socket (env "+envSocket+")")
	fs.StringVar(&cfg.SocketGroup, "socket-group", "", "group allowed to use the local API besides root")
	fs.StringVar(&cfg.TUN, "tun", daemon.DefaultTUN, "tunnel interface name")
	fs.UintVar(&port, "port", daemon.DefaultPort, "UDP port for WireGuard traffic (0 = any)")
	fs.IntVar(&cfg.MTU, "mtu", 0, "tunnel MTU (default 1420)")
	fs.BoolVar(&verbose, "verbose", false, "log debug messages")
	fs.StringVar(&cfg.ResolvConf, "resolv-conf", "/etc/resolv.conf", "host resolver file that `up --accept-dns` points at MagicDNS")
	fs.BoolVar(&cfg.Userspace, "userspace", false, "run without TUN, netlink, nftables or root: a userspace network stack; programs reach the mesh through --socks5/--http-proxy (state and socket default to the user's directories)")
	fs.StringVar(&cfg.SOCKS5, "socks5", "", "userspace: serve a SOCKS5 proxy to the mesh on this loopback IP:PORT (e.g. 127.0.0.1:1055)")
	fs.StringVar(&cfg.HTTPProxy, "http-proxy", "", "userspace: serve an HTTP proxy (CONNECT and plain HTTP) to the mesh on this loopback IP:PORT (e.g. 127.0.0.1:1056)")
	fs.BoolVar(&cfg.ForwardInbound, "forward-inbound", false, "userspace: forward TCP connections from the mesh to the node's addresses to the same port on the host's 127.0.0.1")
	fs.DurationVar(&cfg.ProxyDialTimeout, "proxy-dial-timeout", 30*time.Second, "userspace: how long a proxy waits for a mesh destination to answer")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics (a bare PORT binds to 127.0.0.1; off by default)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: warren daemon [FLAGS]\n\nRuns the node agent in the foreground (as root, or as any user with --userspace). Flags:")
		fs.PrintDefaults()
	}
	if code, ok := parseVerb(fs, args, 0, stderr); !ok {
		return code
	}
	if port > 65535 {
		fmt.Fprintf(stderr, "warren daemon: --port %d: must be 0..65535\n", port)
		return 2
	}
	cfg.Port = uint16(port)
	if cfg.Userspace {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["state-dir"] {
			dir, err := userStateDir()
			if err != nil {
				fmt.Fprintf(stderr, "warren daemon: --userspace: %v; pass --state-dir\n", err)
				return 2
			}
			cfg.StateDir = dir
		}
		if !set["socket"] && os.Getenv(envSocket) == "" {
			cfg.Socket = userSocket(cfg.StateDir)
		}
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	d, err := daemon.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "warren daemon: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Under systemd: READY=1 once the local API answers, WATCHDOG=1 while
	// it does, STOPPING=1 when the daemon begins to shut down.
	var stopNotify func()
	ready := func() {
		lc := localapi.NewClient(cfg.Socket)
		stopNotify = notifyServing(ctx, cfg.Logger, func(ctx context.Context) error { _, err := lc.Status(ctx); return err })
	}
	err = d.Run(ctx, ready)
	if stopNotify != nil {
		stopNotify()
	}
	if err != nil {
		fmt.Fprintf(stderr, "warren daemon: %v\n", oneLine(err))
		return 1
	}
	return 0
}

// oneLine folds a multi-line error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// socketFlag adds --socket to a node verb's flags.
func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("socket", defaultSocket(), "the daemon's local API socket (env "+envSocket+")")
}

// parseVerb parses a node verb's flags, handling --help and stray
// arguments; ok false means return code.
func parseVerb(fs *flag.FlagSet, args []string, maxArgs int, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprintf(stderr, "usage: warren %s [FLAGS]\n", fs.Name())
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return 0, false
		}
		fmt.Fprintf(stderr, "warren %s: %v (see --help)\n", fs.Name(), err)
		return 2, false
	}
	if fs.NArg() > maxArgs {
		fmt.Fprintf(stderr, "warren %s: unexpected argument %q\n", fs.Name(), fs.Arg(maxArgs))
		return 2, false
	}
	return 0, true
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
