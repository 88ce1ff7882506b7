package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/drop"
	"github.com/warrenmesh/warren/internal/localapi"
)

func fileGetCmd(s *streams) *cobra.Command {
	c := &cobra.Command{
		Use:   "get [flags] DIR",
		Short: "move received files into DIR",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one directory")
			}
			return nil
		},
	}
	fs := c.Flags()
	sock := socketFlag(fs)
	wait := fs.Bool("wait", false, "wait for a file if none is waiting")
	conflict := fs.String("conflict", "skip", "`MODE` when DIR already has a file of that name: skip (leave it waiting), overwrite, or rename (NAME (1).EXT)")
	c.RunE = func(_ *cobra.Command, args []string) error {
		return exit(runFileGet(*sock, args[0], *wait, *conflict, s.stdout, s.stderr))
	}
	return c
}

func runFileGet(sock, dir string, wait bool, conflict string, stdout, stderr io.Writer) int {
	switch conflict {
	case "skip", "overwrite", "rename":
	default:
		fmt.Fprintf(stderr, "warren file get: --conflict %q: want skip, overwrite or rename\n", conflict)
		return 2
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		fmt.Fprintf(stderr, "warren file get: %s is not a directory\n", dir)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lc := localapi.NewClient(sock)
	var files []localapi.WaitingFile
	for {
		l, err := lc.FileList(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "warren file get: %v\n", err)
			return 1
		}
		files = l.Files
		if len(files) > 0 || !wait {
			break
		}
		select {
		case <-ctx.Done():
			return 1
		case <-time.After(250 * time.Millisecond):
		}
	}
	skipped := 0
	for _, f := range files {
		target, err := getOne(ctx, lc, f, dir, conflict)
		if err != nil {
			fmt.Fprintf(stderr, "warren file get: %s: %v\n", f.Name, oneLine(err))
			return 1
		}
		if target == "" {
			skipped++
			fmt.Fprintf(stderr, "warren file get: %s: skipped, %s exists (see --conflict)\n", f.Name, filepath.Join(dir, f.Name))
			continue
		}
		fmt.Fprintf(stdout, "%s\n", target)
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "warren file get: %d file(s) left waiting\n", skipped)
		return 1
	}
	return 0
}

// getOne copies a waiting file into dir (verifying its SHA-256), then
// removes it from the inbox; "" means skipped.
func getOne(ctx context.Context, lc *localapi.Client, f localapi.WaitingFile, dir, conflict string) (string, error) {
	if drop.ValidName(f.Name) != nil { // never trust a name for a path
		return "", fmt.Errorf("refusing the unsafe name %q", f.Name)
	}
	target := filepath.Join(dir, f.Name)
	if _, err := os.Lstat(target); err == nil {
		switch conflict {
		case "skip":
			return "", nil
		case "rename":
			for i := 1; ; i++ {
				target = filepath.Join(dir, drop.Numbered(f.Name, i))
				if _, err := os.Lstat(target); os.IsNotExist(err) {
					break
				}
			}
		}
	}
	rc, err := lc.FileOpen(ctx, f.Name)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(dir, "."+f.Name+".*.warren-get")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	hs := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, hs), rc)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if n != f.Size || (f.SHA256 != "" && hex.EncodeToString(hs.Sum(nil)) != f.SHA256) {
		return "", fmt.Errorf("copy does not match the received file (%d of %d bytes)", n, f.Size)
	}
	os.Chmod(tmp.Name(), 0o644&^umask())
	if err := os.Rename(tmp.Name(), target); err != nil {
		return "", err
	}
	if err := lc.FileDelete(ctx, f.Name); err != nil {
		return target, fmt.Errorf("copied to %s, but could not remove it from the inbox: %v", target, err)
	}
	return target, nil
}

func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

func fileListCmd(s *streams) *cobra.Command {
	c := &cobra.Command{Use: "list [flags]", Aliases: []string{"ls"}, Short: "show received files waiting", Args: noArgs}
	sock := socketFlag(c.Flags())
	asJSON := c.Flags().Bool("json", false, "print the inbox as JSON")
	c.RunE = func(*cobra.Command, []string) error { return exit(runFileList(*sock, *asJSON, s.stdout, s.stderr)) }
	return c
}

func runFileList(sock string, asJSON bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := localapi.NewClient(sock).FileList(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "warren file list: %v\n", err)
		return 1
	}
	if asJSON {
		emitJSON(stdout, l)
		return 0
	}
	if len(l.Files) == 0 {
		fmt.Fprintln(stdout, "no files waiting")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tFROM\tRECEIVED")
	for _, f := range l.Files {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, bytesIEC(uint64(f.Size)), f.From, ago(time.Since(f.Received)))
	}
	tw.Flush()
	return 0
}
