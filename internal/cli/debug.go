package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/capture"
	"github.com/warrenmesh/warren/internal/localapi"
)

func debugCmd(s *streams) *cobra.Command {
	return groupCmd("debug", "packet capture (pcap) or a bug-report bundle", "", captureCmd(s), bundleCmd(s))
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

func captureCmd(s *streams) *cobra.Command {
	c := &cobra.Command{
		Use:   "capture [flags] [PEER]",
		Short: "stream a pcap of the tunnel's packets (tcpdump -r, Wireshark)",
		Long: `Streams a pcap of the decrypted packets at the tunnel boundary (tcpdump -r
FILE, Wireshark), optionally of one PEER (name, DNS name, key or tunnel
address) or of any inner IP address; with --outer, the encrypted WireGuard
messages (pcapng), each annotated with its peer and path. Runs until
Ctrl-C, --duration or -c.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("at most one peer, got %q", args)
			}
			return nil
		},
	}
	fs := c.Flags()
	sock := socketFlag(fs)
	out := fs.StringP("output", "o", "", "write the capture to `FILE` (default stdout)")
	var req localapi.CaptureRequest
	fs.BoolVar(&req.Outer, "outer", false, "capture the encrypted messages (pcapng, with peer and path) instead of the inner packets")
	fs.DurationVar(&req.Duration, "duration", 0, "stop after this long")
	fs.IntVarP(&req.Count, "count", "c", 0, "stop after `N` packets")
	c.RunE = func(_ *cobra.Command, args []string) error {
		if len(args) == 1 {
			req.Peer = args[0]
		}
		return exit(runCapture(*sock, *out, req, s.stdout, s.stderr))
	}
	return c
}

func runCapture(sock, out string, req localapi.CaptureRequest, stdout, stderr io.Writer) int {
	if req.Duration < 0 || req.Count < 0 {
		fmt.Fprintln(stderr, "warren debug capture: --duration and -c must not be negative")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	body, err := localapi.NewClient(sock).Capture(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "warren debug capture: %v\n", err)
		return 1
	}
	defer body.Close()
	w, closeOut, err := output(out, stdout)
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
	if out != "" && out != "-" {
		fmt.Fprintf(stderr, "%d packets captured to %s\n", n, out)
	}
	return 0
}

func bundleCmd(s *streams) *cobra.Command {
	c := &cobra.Command{
		Use:   "bundle [flags]",
		Short: "write a bug-report bundle (status, network map, metrics, logs)",
		Long: `Writes status, the network map (keys redacted), metrics and recent daemon
logs into one text file for a bug report (--json: one JSON object); auth
keys, API keys and the node's private key are never included.`,
		Args: noArgs,
	}
	fs := c.Flags()
	sock := socketFlag(fs)
	out := fs.StringP("output", "o", "", "write the bundle to `FILE` (default stdout)")
	asJSON := fs.Bool("json", false, "write the bundle as one JSON object (status, prefs and netmap as JSON, metrics text, log lines)")
	c.RunE = func(*cobra.Command, []string) error { return exit(runBundle(*sock, *out, *asJSON, s.stdout, s.stderr)) }
	return c
}

func runBundle(sock, out string, asJSON bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var text bytes.Buffer
	err := localapi.NewClient(sock).Bundle(ctx, &text)
	if err != nil {
		fmt.Fprintf(stderr, "warren debug bundle: %v\n", err)
		return 1
	}
	w, closeOut, err := output(out, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "warren debug bundle: %v\n", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(parseBundle(text.String()))
	} else {
		_, err = w.Write(text.Bytes())
	}
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(stderr, "warren debug bundle: %v\n", err)
		return 1
	}
	if out != "" && out != "-" {
		fmt.Fprintf(stderr, "bundle written to %s\n", out)
	}
	return 0
}

// bundleJSON is `warren debug bundle --json`: the daemon's text bundle
// (a header, then "===== NAME =====" sections) as one object.
type bundleJSON struct {
	Header   map[string]string          `json:"header"`             // "time", "go"
	Sections map[string]json.RawMessage `json:"sections"`           // status, prefs, netmap: JSON; others: a string
	Logs     []string                   `json:"logs"`               // the last daemon log lines
	Other    string                     `json:"unparsed,omitempty"` // text before the first section not of the form key: value
}

var bundleSectionRE = regexp.MustCompile(`(?m)^===== (.+) =====$`)

// parseBundle splits the daemon's bundle text into its sections. A
// section that holds JSON is kept as JSON; the others as text; the logs
// as one string per line.
func parseBundle(text string) bundleJSON {
	b := bundleJSON{Header: map[string]string{}, Sections: map[string]json.RawMessage{}, Logs: []string{}}
	locs := bundleSectionRE.FindAllStringSubmatchIndex(text, -1)
	head := text
	if len(locs) > 0 {
		head = text[:locs[0][0]]
	}
	for _, line := range strings.Split(strings.TrimSpace(head), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			b.Header[k] = v
		} else if line != "" && line != "warren debug bundle" {
			b.Other += line + "\n"
		}
	}
	for i, loc := range locs {
		name := text[loc[2]:loc[3]]
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		body := strings.Trim(text[loc[1]:end], "\n")
		if strings.HasPrefix(name, "logs") {
			if body != "" {
				b.Logs = strings.Split(body, "\n")
			}
			continue
		}
		key, _, _ := strings.Cut(name, " (") // "netmap (keys redacted)"
		if json.Valid([]byte(body)) {
			b.Sections[key] = json.RawMessage(body)
		} else {
			js, _ := json.Marshal(body)
			b.Sections[key] = js
		}
	}
	return b
}
