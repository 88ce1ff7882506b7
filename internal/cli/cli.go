// Package cli owns Warren's command line: it parses the subcommand and its
// flags, turns bad input into one-line errors naming the problem, and hands
// off to the package that does the work.
package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Version is set at build time with -ldflags "-X warren/internal/cli.Version=...".
var Version = "dev"

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

func runVersion(_ []string, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "warren %s\n", Version)
	return 0
}
