package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/drop"
	"github.com/warrenmesh/warren/internal/localapi"
)

func fileCmd(s *streams) *cobra.Command {
	c := groupCmd("file", "send files to your machines, collect received ones",
		"Sends files to the machines of your user and collects the ones received.\nInterrupted sends resume where they stopped when run again.",
		fileCpCmd(s), fileGetCmd(s), fileListCmd(s))
	return c
}

func fileCpCmd(s *streams) *cobra.Command {
	c := &cobra.Command{
		Use:   "cp [flags] FILE... PEER:",
		Short: "send files to a peer (a machine of your user)",
		Long:  "Sends files to PEER (name, DNS name or tunnel address; note the colon).",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 || !strings.HasSuffix(args[len(args)-1], ":") {
				return usagef("want FILE... PEER: (the peer with a trailing colon)")
			}
			if args[len(args)-1] == ":" {
				return usagef("empty peer name before the colon")
			}
			return nil
		},
	}
	sock := socketFlag(c.Flags())
	name := c.Flags().String("name", "", "send the (single) file under this `NAME`")
	c.RunE = func(_ *cobra.Command, args []string) error {
		return exit(runFileCp(*sock, *name, args, s.stdout, s.stderr))
	}
	return c
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func runFileCp(sock, name string, rest []string, stdout, stderr io.Writer) int {
	peer := strings.TrimSuffix(rest[len(rest)-1], ":")
	files := rest[:len(rest)-1]
	if name != "" && len(files) != 1 {
		fmt.Fprintln(stderr, "warren file cp: --name needs exactly one file")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lc := localapi.NewClient(sock)
	for _, path := range files {
		n := name
		if n == "" {
			n = filepath.Base(path)
		}
		if err := sendFile(ctx, lc, path, n, peer, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "warren file cp: %s: %v\n", path, oneLine(err))
			return 1
		}
	}
	return 0
}

// sendFile sends one file: the daemon reads it through the descriptor we
// pass, asks the peer for its offset and sends the rest, hashing as it
// goes; on a broken path send again, which resumes, until no progress was
// made for two minutes.
func sendFile(ctx context.Context, lc *localapi.Client, path, name, peer string, stdout, stderr io.Writer) error {
	clean, err := drop.CleanName(name)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	size := fi.Size()
	req := localapi.FileSendRequest{Peer: peer, Name: clean}
	tty := isTerminal(stderr)
	start := time.Now()
	var firstOff int64 = -1
	var total int64 // bytes sent by finished attempts
	lastProgress := time.Now()
	backoff := 500 * time.Millisecond
	for {
		var sent atomic.Int64 // by this attempt
		var bar *progressBar
		res, err := lc.FileSend(ctx, req, f, func(ev localapi.FileSendEvent) {
			if ev.Start != nil {
				if firstOff < 0 {
					firstOff = ev.Start.Offset
				}
				peer = ev.Start.Peer
				if tty && bar == nil {
					bar = startProgress(stderr, clean, size, ev.Start.Offset, &sent)
				}
			}
			if ev.Sent > 0 {
				sent.Store(ev.Sent)
			}
		})
		if bar != nil {
			bar.stop()
		}
		s := sent.Load()
		total += s
		if err == nil {
			el := time.Since(start)
			if tty {
				fmt.Fprint(stderr, "\r\033[K")
			}
			note := ""
			if firstOff > 0 {
				note = fmt.Sprintf(", resumed at %s", bytesIEC(uint64(firstOff)))
			}
			if res.Name != clean {
				note += ", stored as " + res.Name
			}
			fmt.Fprintf(stdout, "sent %s to %s: %s in %s (%s/s)%s\n", clean, peer, bytesIEC(uint64(size)),
				el.Round(time.Millisecond), bytesIEC(uint64(float64(total)/max(el.Seconds(), 1e-3))), note)
			return nil
		}
		if ctx.Err() != nil {
			return errors.New("interrupted (run the same command again to resume)")
		}
		if !localapi.IsRetryable(err) {
			return err
		}
		if s > 0 {
			lastProgress = time.Now()
			backoff = 500 * time.Millisecond
		}
		if time.Since(lastProgress) > 2*time.Minute {
			return fmt.Errorf("%v (gave up after 2 minutes without progress; run again to resume)", err)
		}
		if tty {
			fmt.Fprintf(stderr, "\r\033[K%s: %v; retrying\n", clean, oneLine(err))
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted (run the same command again to resume)")
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// progressBar redraws "NAME  42% 1.2 GiB/3.0 GiB  110 MB/s  ETA 16s" on a
// terminal five times a second.
type progressBar struct {
	done chan struct{}
	exit chan struct{}
}

func startProgress(w io.Writer, name string, size, off int64, sent *atomic.Int64) *progressBar {
	b := &progressBar{done: make(chan struct{}), exit: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(b.exit)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.done:
				return
			case <-t.C:
			}
			s := sent.Load()
			have := off + s
			rate := float64(s) / time.Since(start).Seconds()
			eta := "-"
			if rate > 0 {
				eta = time.Duration(float64(size-have) / rate * float64(time.Second)).Round(time.Second).String()
			}
			pct := 100.0
			if size > 0 {
				pct = 100 * float64(have) / float64(size)
			}
			fmt.Fprintf(w, "\r\033[K%s  %3.0f%%  %s/%s  %s/s  ETA %s", name, pct, bytesIEC(uint64(have)), bytesIEC(uint64(size)), bytesIEC(uint64(rate)), eta)
		}
	}()
	return b
}

func (b *progressBar) stop() {
	close(b.done)
	<-b.exit
}
