package cli

import (
	"flag"
	"fmt"
	"io"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/tlsserve"
)

// runConfigtest: `warren server configtest` and `warren relay configtest`
// check a config file (YAML, or the deprecated JSON) without starting:
// unknown keys and bad values are one-line errors naming file, line and
// key (package config).
func runConfigtest(sc *config.Schema, args []string, stdout, stderr io.Writer) int {
	who := "warren " + sc.Command + " configtest"
	fs := flag.NewFlagSet(sc.Command+" configtest", flag.ContinueOnError)
	path := fs.String("config", sc.DefaultFile, "the config file to check")
	show := fs.Bool("print", false, "also print the settings the file gives, with the line each came from")
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s [--config FILE] [--print]\nChecks a config file without starting; exit status 1 names the first problem.\nFlags:\n", who)
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if code, done := quietParse(fs, func() error { return fs.Parse(args) }, who, stdout, stderr, usage); done {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", who, fs.Arg(0))
		return 2
	}
	c, err := sc.Check(*path, func(w string) { fmt.Fprintf(stderr, "%s: warning: %s\n", who, w) })
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
	fmt.Fprintf(stdout, "%s: configuration OK\n", *path)
	if *show {
		c.Print(stdout)
	}
	return 0
}
