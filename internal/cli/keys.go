package cli

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/noise"
)

func genkeyCmd(s *streams) *cobra.Command {
	return &cobra.Command{
		Use:   "genkey",
		Short: "print a new private key (base64)",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return exit(runGenkey(s.stdout, s.stderr)) },
	}
}

func pubkeyCmd(s *streams) *cobra.Command {
	return &cobra.Command{
		Use:   "pubkey",
		Short: "read a private key on stdin, print its public key",
		Long:  "Reads a private key (base64, as genkey prints it) on stdin and prints its public key.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("takes no arguments (the private key is read from stdin)")
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error { return exit(pubkeyFrom(s.stdin, s.stdout, s.stderr)) },
	}
}

func runGenkey(stdout, stderr io.Writer) int {
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		fmt.Fprintf(stderr, "warren genkey: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k.Base64())
	noise.Zero(k[:])
	return 0
}

func pubkeyFrom(stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(io.LimitReader(stdin, 1024)).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintf(stderr, "warren pubkey: reading stdin: %v\n", err)
		return 1
	}
	k, err := noise.ParsePrivateKey(strings.TrimSpace(line))
	if err != nil {
		fmt.Fprintf(stderr, "warren pubkey: invalid private key on stdin: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k.PublicKey().String())
	noise.Zero(k[:])
	return 0
}
