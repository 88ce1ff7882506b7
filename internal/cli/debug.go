package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/internal/capture"
	"github.com/warrenmesh/warren/internal/localapi"
)

func init() {
	register(command{"debug", "debug capture|bundle  packet capture (pcap) or a bug-report bundle (see 'warren debug --help')", runDebug})
}

func debugUsage(w io.Writer) {
	fmt.Fprint(w, `usage: warren debug capture [-o FILE] [--outer] [--duration D] [-c N] [PEER]
       warren debug bundle [-o FILE]

capture  streams a pcap of the decrypted packets at the tunnel boundary
         (tcpdump -r FILE, Wireshark), optionally of one peer (name, DNS
         name, key or tunnel address) or of any inner IP address; with
         --outer, the encrypted WireGuard messages (pcapng), each annotated
         with its peer and path. Runs until Ctrl-C, --duration or -c.
bundle   writes status, the network map (keys redacted), metrics and recent
         daemon logs into one text file for a bug report; auth keys, API
         keys and the node's private key are never included.
`)
}

func runDebug(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		debugUsage(stderr)
		return 2
	}
	switch args[0] {
	case "capture":
		return runCapture(args[1:], stdout, stderr)
	case "bundle":
		return runBundle(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		debugUsage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "warren debug: unknown subcommand %q\n", args[0])
	debugUsage(stderr)
	return 2
}

// output opens -o (stdout for "" or "-").
func output(path string, stdout io.Writer) (io.Writer, func() error, error) {
	if path == "" || path == "-" {
		return stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return f, f.Close, nil
}

func runCapture(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("debug capture", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
	out := fs.String("o", "", "write the capture to FILE (default stdout)")
	var req localapi.CaptureRequest
	fs.BoolVar(&req.Outer, "outer", false, "capture the encrypted messages (pcapng, with peer and path) instead of the inner packets")
	fs.DurationVar(&req.Duration, "duration", 0, "stop after this long")
	fs.IntVar(&req.Count, "c", 0, "stop after this many packets")
	// Flags after the peer too.
	var rest []string
	for len(args) > 0 {
		if code, ok := parseVerb(fs, args, 1<<30, stderr); !ok {
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) > 1 {
		fmt.Fprintf(stderr, "warren debug capture: at most one peer, got %q\n", rest)
		return 2
	}
	if len(rest) == 1 {
		req.Peer = rest[0]
	}
	if req.Duration < 0 || req.Count < 0 {
		fmt.Fprintln(stderr, "warren debug capture: --duration and -c must not be negative")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	body, err := localapi.NewClient(*sock).Capture(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "warren debug capture: %v\n", err)
		return 1
	}
	defer body.Close()
	w, closeOut, err := output(*out, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "warren debug capture: %v\n", err)
		return 1
	}
	n, err := capture.CopyRecords(w, body)
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "warren debug capture: %v\n", err)
		return 1
	}
	if *out != "" && *out != "-" {
		fmt.Fprintf(stderr, "%d packets captured to %s\n", n, *out)
	}
	return 0
}

func runBundle(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("debug bundle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
	out := fs.String("o", "", "write the bundle to FILE (default stdout)")
	if code, ok := parseVerb(fs, args, 0, stderr); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, closeOut, err := output(*out, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "warren debug bundle: %v\n", err)
		return 1
	}
	err = localapi.NewClient(*sock).Bundle(ctx, w)
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(stderr, "warren debug bundle: %v\n", err)
		return 1
	}
	if *out != "" && *out != "-" {
		fmt.Fprintf(stderr, "bundle written to %s\n", *out)
	}
	return 0
}
