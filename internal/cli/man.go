package cli

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCmd is the hidden `warren man DIR`: writes a man page (section 1) for
// every command, generated from the same definitions as the help (`make
// man`; the package ships them).
func manCmd(s *streams) *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "write the man pages (section 1) of every command into DIR",
		Hidden: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one directory")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				fmt.Fprintf(s.stderr, "warren man: %v\n", err)
				return exitCode(1)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // reproducible pages
			hdr := &doc.GenManHeader{Title: "WARREN", Section: "1", Source: "Warren " + Version, Manual: "Warren manual"}
			if sec, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
				d := time.Unix(sec, 0).UTC() // reproducible builds
				hdr.Date = &d
			}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				fmt.Fprintf(s.stderr, "warren man: %v\n", err)
				return exitCode(1)
			}
			return nil
		},
	}
}
