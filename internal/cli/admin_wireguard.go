package cli

import (
	"fmt"
	"io"
	"net/url"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// `warren admin nodes add-wireguard|wireguard-config|set-wireguard`:
// WireGuard-only members (docs/WIREGUARD.md).
func adminWireGuardVerbs() []adminVerb {
	return []adminVerb{
		{"nodes", "add-wireguard", "NAME", "add a device with stock WireGuard (a phone, a router) reached through a gateway node; prints its wg-quick configuration", 1, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			var req admin.WireGuardRequest
			fs.StringVar(&req.User, "user", "", "the `USER` who owns the device (required)")
			fs.StringVar(&req.Via, "via", "", "the gateway `NODE` (ID or name) the device connects through: a Warren node it can reach (required)")
			fs.StringVar(&req.PublicKey, "public-key", "", "the device's WireGuard public `KEY` (default: generate a pair and print the private key once)")
			fs.StringVar(&req.Expiration, "expiration", "", "the device's key expires after this long (`DURATION`, e.g. 90d; default never)")
			fs.StringVar(&req.Endpoint, "endpoint", "", "where the device reaches the gateway (`HOST:PORT`; default the gateway's first reported address)")
			fs.Func("tags", "comma-separated `TAGS` (tag:phone,...) owning the device", func(v string) error {
				req.Tags = strings.Split(v, ",")
				return nil
			})
			qr := fs.Bool("qr", false, "also print the configuration as a QR code for the phone apps")
			return func(c *adminClient, p []string) error {
				if req.User == "" || req.Via == "" {
					return usageError("--user and --via are required")
				}
				req.Name = p[0]
				var d admin.WireGuardDevice
				if err := c.do("POST", "/wireguard", req, &d); err != nil {
					return err
				}
				return printWireGuard(c, &d, *qr)
			}
		}},
		{"nodes", "wireguard-config", "ID|NAME", "print a WireGuard-only member's wg-quick configuration again (never with its private key)", 1, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			endpoint := fs.String("endpoint", "", "where the device reaches the gateway (`HOST:PORT`; default the gateway's first reported address)")
			qr := fs.Bool("qr", false, "also print the configuration as a QR code for the phone apps")
			return func(c *adminClient, p []string) error {
				path := "/nodes/" + url.PathEscape(p[0]) + "/wireguard-config"
				if *endpoint != "" {
					path += "?endpoint=" + url.QueryEscape(*endpoint)
				}
				var d admin.WireGuardDevice
				if err := c.do("GET", path, nil, &d); err != nil {
					return err
				}
				return printWireGuard(c, &d, *qr)
			}
		}},
		{"nodes", "set-wireguard", "ID|NAME", "change a WireGuard-only member's gateway or key (the old key stops working at once)", 1, func(fs *pflag.FlagSet) func(*adminClient, []string) error {
			var req admin.WireGuardChange
			fs.StringVar(&req.Via, "via", "", "the new gateway `NODE` (ID or name)")
			fs.StringVar(&req.PublicKey, "public-key", "", "the device's new WireGuard public `KEY`")
			return func(c *adminClient, p []string) error {
				if req.Via == "" && req.PublicKey == "" {
					return usageError("give --via or --public-key")
				}
				var n admin.Node
				return c.mutate("PATCH", "/nodes/"+url.PathEscape(p[0])+"/wireguard", req, &n, func() string {
					return fmt.Sprintf("changed %s (id %d); print its configuration with 'warren admin nodes wireguard-config %s'", n.Name, n.ID, n.Name)
				})
			}
		}},
	}
}

// printWireGuard prints a member's configuration (and the QR code).
func printWireGuard(c *adminClient, d *admin.WireGuardDevice, qr bool) error {
	if c.json {
		return c.printJSON(d)
	}
	w := c.stdout
	fmt.Fprintf(w, "# %s (id %d), %s, through %s\n", d.Node.Name, d.Node.ID, strings.Join(d.Node.Addresses, " "), d.Via)
	if d.PrivateKey != "" {
		fmt.Fprintln(w, "# The private key below is shown only now: it is not stored on the server.")
	}
	if _, err := io.WriteString(w, d.Config); err != nil {
		return err
	}
	if !qr {
		return nil
	}
	return writeQR(w, d.Config)
}

// writeQR writes text as a QR code of half-block characters.
func writeQR(w io.Writer, text string) error {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return fmt.Errorf("QR code: %w", err)
	}
	_, err = io.WriteString(w, q.ToSmallString(false))
	return err
}
