// Command warren is the single Warren binary: the WireGuard interface
// (`warren wg`), key tools, and, later, the mesh daemon, server and CLI.
package main

import (
	"os"

	"github.com/warrenmesh/warren/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args))
}
