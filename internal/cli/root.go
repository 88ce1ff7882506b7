package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// streams are where a command line's commands read and write; tests pass
// buffers.
type streams struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// exitCode is what a command's RunE returns after it has printed its own
// message: the process exits with this code and prints nothing more.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit code %d", int(e)) }

// exit turns a verb body's exit code into RunE's error.
func exit(code int) error {
	if code == 0 {
		return nil
	}
	return exitCode(code)
}

// usageErr is bad input found by the command line (an unknown verb, a
// missing argument): one line naming the problem, exit code 2.
type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageErr{fmt.Sprintf(format, args...)} }

// flagErr is a flag pflag could not parse (unknown, or a bad value).
type flagErr struct{ error }

// Command groups of `warren --help`.
const (
	groupNode   = "node"
	groupServer = "server"
	groupTools  = "tools"
)

// newRoot builds the whole command tree. Every command is defined once
// here (or in the file of its verb group), and the help, `warren help
// VERB`, the shell completion scripts and the man pages are all generated
// from these definitions.
func newRoot(s *streams) *cobra.Command {
	cobra.EnableCommandSorting = false // help lists verbs in the order defined here
	var showVersion bool
	root := &cobra.Command{
		Use:   "warren",
		Short: "a self-hostable WireGuard mesh VPN",
		Long: `Warren is a self-hostable mesh VPN: one binary that is the node agent
(warren daemon, up, status, ...), the coordination server (warren server,
admin), a packet relay (warren relay) and a userspace WireGuard interface
(warren wg, a drop-in for wireguard-go).

'warren help VERB' or 'warren VERB --help' describes a verb.`,
		Args:          cobra.ArbitraryArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				return exit(runVersion(false, s.stdout))
			}
			if len(args) == 0 {
				return usagef("missing command (see 'warren help' for the list)")
			}
			return usagef("unknown command %q (see 'warren help')", args[0])
		},
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the version (as 'warren version')")
	root.SetIn(s.stdin)
	root.SetOut(s.stdout)
	root.SetErr(s.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return flagErr{err} })
	root.AddGroup(
		&cobra.Group{ID: groupNode, Title: "Node commands (talk to the local warren daemon):"},
		&cobra.Group{ID: groupServer, Title: "Server commands:"},
		&cobra.Group{ID: groupTools, Title: "WireGuard and key tools:"},
	)
	root.SetHelpCommand(helpCmd())
	root.SetCompletionCommandGroupID(groupTools)
	root.SetHelpCommandGroupID(groupTools)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add(groupNode, daemonCmd(s), upCmd(s), downCmd(s), logoutCmd(s), statusCmd(s), ipCmd(s), pingCmd(s),
		netcheckCmd(s), metricsCmd(s), fileCmd(s), debugCmd(s))
	add(groupServer, serverCmd(s), adminCmd(s), relayCmd(s))
	add(groupTools, wgCmd(s), genkeyCmd(s), pubkeyCmd(s), versionCmd(s))
	root.AddCommand(manCmd(s))
	root.InitDefaultCompletionCmd()
	if c := subcommand(root, "completion"); c != nil {
		c.Short = "print a shell completion script (bash, zsh, fish, powershell)"
		c.Args, c.RunE = cobra.ArbitraryArgs, groupRunE("shell")
	}
	root.SetUsageTemplate(usageTemplate(root.UsageTemplate()))
	walk(root, func(c *cobra.Command) {
		c.InitDefaultHelpFlag()
		c.Flags().SortFlags = false
		c.PersistentFlags().SortFlags = false
		for name, values := range flagValues {
			if c.Flags().Lookup(name) != nil {
				c.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
			}
		}
	})
	return root
}

// flagValues are the values shells complete for flags that take one of a
// few words.
var flagValues = map[string][]string{
	"log-level":  {"debug", "info", "warn", "error"},
	"log-format": {"text", "json"},
	"scope":      {"admin", "relay"},
	"conflict":   {"skip", "overwrite", "rename"},
}

// usageTemplate adapts cobra's usage template: a group of verbs shows no
// usage line of its own (it runs no verb), and subcommands are called
// VERB, as in 'warren help VERB'.
func usageTemplate(t string) string {
	for _, r := range [][2]string{
		{"Usage:{{if .Runnable}}", `Usage:{{if and .Runnable (not (index .Annotations "group"))}}`},
		{"{{.CommandPath}} [command]", "{{.CommandPath}} VERB"},
		{"Available Commands:", "Verbs:"},
	} {
		t = strings.ReplaceAll(t, r[0], r[1])
	}
	return t
}

// walk calls fn on c and every command below it.
func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// groupCmd is a command that only holds verbs (warren admin users, warren
// debug): without a verb it fails naming the verbs it has; "help" prints
// its help.
func groupCmd(use, short, long string, verbs ...*cobra.Command) *cobra.Command {
	return groupOf("verb", use, short, long, verbs...)
}

// groupOf is groupCmd whose subcommands are called noun (verb, resource).
func groupOf(noun, use, short, long string, verbs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Long: long, Args: cobra.ArbitraryArgs, Annotations: map[string]string{"group": noun}}
	c.RunE = groupRunE(noun)
	c.AddCommand(verbs...)
	return c
}

// groupRunE runs a group named without one of its verbs.
func groupRunE(noun string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		var names []string
		for _, v := range cmd.Commands() {
			if v.IsAvailableCommand() {
				names = append(names, v.Name())
			}
		}
		switch {
		case len(args) > 0 && args[0] == "help":
			return cmd.Help()
		case len(args) == 0:
			return usagef("missing %s (want %s)", noun, strings.Join(names, ", "))
		}
		return usagef("unknown %s %q (want %s)", noun, args[0], strings.Join(names, ", "))
	}
}

// helpCmd is `warren help [VERB...]`: the help of a verb on stdout; an
// unknown verb is a usage error.
func helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [VERB...]",
		Short: "help about any verb ('warren help admin nodes list')",
		Args:  cobra.ArbitraryArgs,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []string
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, sub.Name()+"\t"+sub.Short)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("no verb %q (see 'warren help')", strings.Join(args, " "))
			}
			return cmd.Help()
		},
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
	return runWith(args, &streams{os.Stdin, os.Stdout, os.Stderr})
}

func run(args []string, stdout, stderr io.Writer) int {
	return runWith(args, &streams{os.Stdin, stdout, stderr})
}

// runWith runs args and turns the outcome into an exit code: 0, 1 for a
// failure the command reported itself, 2 for bad input, reported here as
// one line naming the command and the problem.
func runWith(args []string, s *streams) int {
	root := newRoot(s)
	root.SetArgs(normalizeArgs(root, args))
	cmd, err := root.ExecuteC()
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	}
	who := "warren"
	if cmd != nil {
		who = cmd.CommandPath()
	}
	msg := strings.Join(strings.Fields(err.Error()), " ")
	var ue usageErr
	if !errors.As(err, &ue) {
		msg += fmt.Sprintf(" (see '%s --help')", who)
	}
	fmt.Fprintf(s.stderr, "%s: %s\n", who, msg)
	return 2
}

// normalizeArgs rewrites the flags Go's flag package accepted and pflag
// does not, so that every command line that worked before keeps working: a
// long flag given with one dash (-server URL, -json) gets its second dash,
// and a one-letter flag given with two (--c 3) loses one. Only names that
// are flags of the command being named at that point are rewritten; the
// argument after "--", and the value of a flag that takes one, are left
// alone.
func normalizeArgs(root *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args))
	cmd := root
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			if sub := subcommand(cmd, a); sub != nil {
				cmd = sub
			}
			out = append(out, a)
			continue
		}
		long := strings.HasPrefix(a, "--")
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var f *pflag.Flag
		switch {
		case !long && len(name) > 1:
			if f = lookupFlag(cmd, name); f != nil {
				a = "-" + a
				long = true
			}
		case long && len(name) == 1:
			if lookupFlag(cmd, name) == nil {
				if f = lookupShorthand(cmd, name); f != nil {
					a = a[1:]
				}
			} else {
				f = lookupFlag(cmd, name)
			}
		case long:
			f = lookupFlag(cmd, name)
		default:
			f = lookupShorthand(cmd, name)
		}
		out = append(out, a)
		if f != nil && f.NoOptDefVal == "" && !hasValue && i+1 < len(args) {
			out = append(out, args[i+1]) // the flag's value, whatever it looks like
			i++
		}
	}
	return out
}

func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}

func lookupFlag(cmd *cobra.Command, name string) *pflag.Flag {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f
	}
	return cmd.InheritedFlags().Lookup(name)
}

func lookupShorthand(cmd *cobra.Command, name string) *pflag.Flag {
	if f := cmd.Flags().ShorthandLookup(name); f != nil {
		return f
	}
	return cmd.InheritedFlags().ShorthandLookup(name)
}

// noArgs, exactArgs, ...: positional argument checks whose errors name the
// command's arguments.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}
