package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/control/audit"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/store"
)

// `warren server apikey create|list` and `warren server key`: the server's
// subcommands, which use its store and key directly on the server host.

func serverAPIKeyCreateCmd(s *streams) *cobra.Command {
	sf := newServerFlags("server apikey create", false)
	var expiration, scope string
	c := &cobra.Command{
		Use:   "create [flags]",
		Short: "print a new admin API key (--scope relay: a read-only key for 'warren relay --relay-key')",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			return exit(runServerAPIKey(sf, "create", expiration, scope, false, s.stdout, s.stderr))
		},
	}
	c.Flags().StringVar(&expiration, "expiration", "", "the key stops working after this long (`DURATION`, e.g. 90d, 12h; default never)")
	c.Flags().StringVar(&scope, "scope", "admin", "`SCOPE`: admin (everything) or relay (read-only: lists node keys for 'warren relay --relay-key')")
	c.Flags().AddFlagSet(sf.fs)
	return c
}

func serverAPIKeyListCmd(s *streams) *cobra.Command {
	sf := newServerFlags("server apikey list", false)
	var asJSON bool
	c := &cobra.Command{
		Use:   "list [flags]",
		Short: "list the admin API keys (prefixes only)",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			return exit(runServerAPIKey(sf, "list", "", "", asJSON, s.stdout, s.stderr))
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().AddFlagSet(sf.fs)
	return c
}

// runServerAPIKey: `warren server apikey create|list`.
func runServerAPIKey(sf *serverFlags, verb, expiration, scope string, asJSON bool, stdout, stderr io.Writer) int {
	c, err := sf.resolve()
	if err != nil {
		fmt.Fprintf(stderr, "warren server apikey %s: %v\n", verb, err)
		return 2
	}
	for _, w := range c.warnings {
		fmt.Fprintf(stderr, "warren server apikey %s: warning: %s\n", verb, w)
	}
	if verb == "create" && scope != "admin" && scope != store.ScopeRelay {
		fmt.Fprintf(stderr, "warren server apikey create: --scope %q: want admin or relay\n", scope)
		return 2
	}
	if scope == "admin" {
		scope = store.ScopeAdmin
	}
	var exp time.Time
	if expiration != "" {
		d, err := admin.ParseDuration(expiration)
		if err != nil {
			fmt.Fprintf(stderr, "warren server apikey create: --expiration: %v\n", err)
			return 2
		}
		exp = time.Now().Add(d)
	}
	if err := c.storeExists(); err != nil {
		fmt.Fprintf(stderr, "warren server apikey %s: %v\n", verb, err)
		return 1
	}
	st, err := c.openStore(context.Background())
	if err != nil {
		fmt.Fprintf(stderr, "warren server apikey %s: %v\n", verb, err)
		return 1
	}
	defer st.Close()
	ctx := context.Background()
	if verb == "create" {
		secret, k, err := st.CreateScopedAPIKey(ctx, scope, exp)
		if err != nil {
			fmt.Fprintf(stderr, "warren server apikey create: %v\n", err)
			return 1
		}
		// On the server host, from the store directly: who is the OS user.
		audit.Record(ctx, st, nil, nil, "local:"+localUser(), "apikey.create", "apikey "+k.Prefix, "scope "+admin.ScopeName(k.Scope)+" (warren server apikey create)", true)
		fmt.Fprintln(stdout, secret)
		return 0
	}
	ks, err := st.ListAPIKeys(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "warren server apikey list: %v\n", err)
		return 1
	}
	now := time.Now()
	out := make([]admin.APIKey, 0, len(ks))
	for _, k := range ks {
		a := admin.APIKey{ID: k.ID, Prefix: k.Prefix, Expired: !k.Expiry.IsZero() && !now.Before(k.Expiry), Created: k.Created.UTC(), Scope: admin.ScopeName(k.Scope)}
		a.Expiration, a.LastUsed = optTime(k.Expiry), optTime(k.LastUsed)
		out = append(out, a)
	}
	if asJSON {
		return printJSON(stdout, stderr, "warren server apikey list", out)
	}
	printAPIKeys(stdout, out)
	return 0
}

// localUser names the OS user running a command on the server host.
func localUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(os.Getuid())
}

func serverKeyCmd(s *streams) *cobra.Command {
	sf := newServerFlags("server key", false)
	c := &cobra.Command{
		Use:   "key [flags]",
		Short: "print the server's public key (to compare with what 'warren up' pinned)",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return exit(runServerKey(sf, s.stdout, s.stderr)) },
	}
	c.Flags().AddFlagSet(sf.fs)
	return c
}

// runServerKey: `warren server key` prints the public key of an existing
// server key.
func runServerKey(sf *serverFlags, stdout, stderr io.Writer) int {
	c, err := sf.resolve()
	if err != nil {
		fmt.Fprintf(stderr, "warren server key: %v\n", err)
		return 2
	}
	for _, w := range c.warnings {
		fmt.Fprintf(stderr, "warren server key: warning: %s\n", w)
	}
	k, err := loadServerKey(c.keyPath(), false)
	if err != nil {
		fmt.Fprintf(stderr, "warren server key: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, k.PublicKey().String())
	noise.Zero(k[:])
	return 0
}
