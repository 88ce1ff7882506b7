package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/localapi"
)

func metricsCmd(s *streams) *cobra.Command {
	c := &cobra.Command{Use: "metrics [flags]", Short: "print the daemon's metrics (Prometheus text format)", Args: noArgs}
	sock := socketFlag(c.Flags())
	c.RunE = func(*cobra.Command, []string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := localapi.NewClient(*sock).Metrics(ctx, s.stdout); err != nil {
			fmt.Fprintf(s.stderr, "warren metrics: %v\n", err)
			return exitCode(1)
		}
		return nil
	}
	return c
}
