package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// rawBody is a request body sent as is (the policy's HuJSON text, so its
// comments are kept), not encoded as JSON.
type rawBody []byte

// readPolicyFile reads FILE, or standard input for "-".
func readPolicyFile(name string) (rawBody, error) {
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 4<<20))
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	return rawBody(b), nil
}

// `warren admin policy get|set|check|delete`.
func adminPolicyVerbs() []adminVerb {
	return []adminVerb{
		{"policy", "get", "", "print the access policy in force (nothing if none: every node allows everything)", 0, noFlags(func(c *adminClient, _ []string) error {
			var p admin.Policy
			if err := c.do("GET", "/policy", nil, &p); err != nil {
				return err
			}
			if c.json {
				return c.printJSON(p)
			}
			if p.Policy == "" {
				fmt.Fprintln(os.Stderr, "no policy: every node allows everything")
				return nil
			}
			_, err := io.WriteString(c.stdout, strings.TrimRight(p.Policy, "\n")+"\n")
			return err
		})},
		{"policy", "set", "FILE", "check FILE (HuJSON; - for stdin) and its tests, then make it the policy; nodes follow within seconds", 1, noFlags(func(c *adminClient, p []string) error {
			text, err := readPolicyFile(p[0])
			if err != nil {
				return err
			}
			var out admin.Policy
			return c.mutate("PUT", "/policy", text, &out, func() string {
				return fmt.Sprintf("policy set (version %d)", out.Version)
			})
		})},
		{"policy", "check", "FILE", "check FILE (syntax, references, its tests) without setting it", 1, noFlags(func(c *adminClient, p []string) error {
			text, err := readPolicyFile(p[0])
			if err != nil {
				return err
			}
			var out admin.PolicyCheck
			return c.mutate("POST", "/policy/check", text, &out, func() string {
				return fmt.Sprintf("policy OK (%d tests passed)", out.Tests)
			})
		})},
		{"policy", "delete", "", "remove the policy: every node allows everything again", 0, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			return func(c *adminClient, _ []string) error {
				var out admin.Policy
				return c.mutate("DELETE", "/policy", nil, &out, func() string { return "policy removed: every node allows everything" })
			}
		}},
	}
}
