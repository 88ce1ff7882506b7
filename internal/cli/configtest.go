package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/tlsserve"
)

// configtestCmd: `warren server configtest` and `warren relay configtest`
// check a config file (YAML, or the deprecated JSON) without starting:
// unknown keys and bad values are one-line errors naming file, line and
// key (package config).
func configtestCmd(s *streams, sc *config.Schema) *cobra.Command {
	var path string
	var show bool
	c := &cobra.Command{
		Use:   "configtest",
		Short: "check a config file without starting; exit status 1 names the first problem",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			return exit(runConfigtest(sc, path, show, s.stdout, s.stderr))
		},
	}
	c.Flags().StringVar(&path, "config", sc.DefaultFile, "the config `FILE` to check")
	c.Flags().BoolVar(&show, "print", false, "also print the settings the file gives, with the line each came from")
	return c
}

func runConfigtest(sc *config.Schema, path string, show bool, stdout, stderr io.Writer) int {
	who := "warren " + sc.Command + " configtest"
	c, err := sc.Check(path, func(w string) { fmt.Fprintf(stderr, "%s: warning: %s\n", who, w) })
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", who, err)
		return 1
	}
	// Like nginx -t: the certificate files named must load too.
	tk := config.ServerTLS
	if sc == config.Relay {
		tk = config.RelayTLS
	}
	if cert := config.Get(c, tk.Cert); cert != "" {
		if _, err := tlsserve.LoadCertFiles(cert, config.Get(c, tk.Key)); err != nil {
			fmt.Fprintf(stderr, "%s: %s: %v\n", who, c.From(tk.Cert.Name()), err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "%s: configuration OK\n", path)
	if show {
		c.Print(stdout)
	}
	return 0
}
