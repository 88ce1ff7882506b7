// Package cli owns Warren's command line: it parses the subcommand and its
// flags, turns bad input into one-line errors naming the problem, and hands
// off to the package that does the work.
package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version, Commit and BuildDate are set at build time with -ldflags
// "-X github.com/warrenmesh/warren/internal/cli.Version=..." (see the Makefile); a plain go build
// leaves them empty and `warren version` falls back on what the Go
// toolchain recorded (the VCS revision and time, when it stamped them).
var (
	Version   = "dev"
	Commit    = ""
	BuildDate = ""
)

type command struct {
	name  string
	usage string
	run   func(args []string, stdout, stderr io.Writer) int
}

// registered holds commands added by register from the files that
// implement them (server, admin, daemon, node verbs), in usage order.
var registered []command

// register adds a command; call it from an init function. Commands are
// listed in usage in the order they were registered.
func register(c command) { registered = append(registered, c) }

func commands() []command {
	base := []command{
		{"wg", "wg [-f] IFNAME       run a WireGuard interface (drop-in for wireguard-go)", runWG},
		{"genkey", "genkey               print a new private key (base64)", runGenkey},
		{"pubkey", "pubkey               read a private key on stdin, print its public key", runPubkey},
		{"version", "version              print the version", runVersion},
	}
	return append(base, registered...)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: warren COMMAND [ARGS]")
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintln(w, "  "+c.usage)
	}
}

// Main runs a whole argv. Invoked under the name "warren-wg" (a symlink),
// the binary acts as `warren wg`, so that wg-quick can use it through
// WG_QUICK_USERSPACE_IMPLEMENTATION, which passes only the interface name.
func Main(argv []string) int {
	if len(argv) > 0 && filepath.Base(argv[0]) == "warren-wg" {
		return Run(append([]string{"wg"}, argv[1:]...))
	}
	return Run(argv[1:])
}

// Run runs the command line args (without the program name) and returns the
// exit code.
func Run(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	case "--version":
		return runVersion(nil, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "warren: unknown command %q (see 'warren help')\n", args[0])
	return 2
}

// versionInfo is what `warren version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	Modified  bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	BuildDate string `json:"buildDate,omitempty"`
	Go        string `json:"go"`
	Platform  string `json:"platform"`
}

func currentVersion() versionInfo {
	v := versionInfo{Version: Version, Commit: Commit, BuildDate: BuildDate, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.time":
				if v.BuildDate == "" {
					v.BuildDate = s.Value
				}
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if strings.HasSuffix(v.Version, "-dirty") {
		v.Modified = true
	}
	return v
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	asJSON := false
	for _, a := range args {
		switch a {
		case "--json", "-json":
			asJSON = true
		case "-h", "--help":
			fmt.Fprintln(stdout, "usage: warren version [--json]   the version, commit, build date and Go version")
			return 0
		default:
			fmt.Fprintf(stderr, "warren version: unknown argument %q (usage: warren version [--json])\n", a)
			return 2
		}
	}
	v := currentVersion()
	if asJSON {
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	fmt.Fprintf(stdout, "warren %s\n", v.Version)
	if v.Commit != "" {
		mod := ""
		if v.Modified {
			mod = " (modified)"
		}
		fmt.Fprintf(stdout, "  commit  %s%s\n", v.Commit, mod)
	}
	if v.BuildDate != "" {
		fmt.Fprintf(stdout, "  built   %s\n", v.BuildDate)
	}
	fmt.Fprintf(stdout, "  go      %s %s\n", v.Go, v.Platform)
	return 0
}
