// Package cli owns Warren's command line: the command tree (built with
// github.com/spf13/cobra, see root.go), its flags, bad input turned into
// one-line errors naming the problem (exit code 2), and the hand-off to the
// package that does the work.
//
// Cobra rather than the standard flag package: the help of every verb, the
// `warren help VERB` topics, the bash/zsh/fish completion scripts and the
// man pages are all generated from the one definition of each command, so
// they cannot drift apart; its flags are pflag FlagSets, which the
// configuration layer binds to (flags > environment > file); and it is what
// headscale uses. Go's flag package accepted long flags with a single dash
// (-server URL, -json), pflag does not: normalizeArgs rewrites them before
// cobra parses, so every command line that worked keeps working.
package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
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

func versionCmd(s *streams) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "print the version, commit, build date and Go version",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return exit(runVersion(asJSON, s.stdout)) },
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the version as a JSON object")
	return c
}

func runVersion(asJSON bool, stdout io.Writer) int {
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
