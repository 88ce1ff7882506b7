package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/warrenmesh/warren/internal/noise"
)

func runGenkey(args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "warren genkey: takes no arguments")
		return 2
	}
	k, err := noise.GeneratePrivateKey()
	if err != nil {
		fmt.Fprintf(stderr, "warren genkey: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k.Base64())
	noise.Zero(k[:])
	return 0
}

func runPubkey(args []string, stdout, stderr io.Writer) int {
	return pubkeyFrom(args, os.Stdin, stdout, stderr)
}

func pubkeyFrom(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "warren pubkey: takes no arguments (the private key is read from stdin)")
		return 2
	}
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
