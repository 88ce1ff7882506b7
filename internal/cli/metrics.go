package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
)

func init() {
	register(command{"metrics", "metrics              print the daemon's metrics (Prometheus text format)", runMetrics})
}

func runMetrics(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("metrics", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
	if code, ok := parseVerb(fs, args, 0, stderr); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := localapi.NewClient(*sock).Metrics(ctx, stdout); err != nil {
		fmt.Fprintf(stderr, "warren metrics: %v\n", err)
		return 1
	}
	return 0
}
