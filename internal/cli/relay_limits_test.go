package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "1500": 1500, "64K": 64 << 10, "50M": 50 << 20,
		"50MiB": 50 << 20, "2m": 2 << 20, "1G": 1 << 30, "3GB": 3 << 30} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "5X", "M", "1.5M", "10KM", "99999999999G"} {
		if got, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) = %d; want an error", in, got)
		}
	}
}

// TestRelayRateOptIn: neither relay limits a node's rate unless its
// operator asks — the embedded relay of `warren server --relay` and the
// standalone `warren relay` announce no rate by default — and each takes
// its own flags (--relay-rate/--relay-burst; --rate/--burst), which the
// relay announces to the node in its first frame and enforces.
func TestRelayRateOptIn(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envAPIKey, "")
	for _, tc := range []struct {
		name                  string
		serverFlags, relayFlg []string
		rate, burst           int64
	}{
		{"default", nil, nil, 0, 0},
		{"set", []string{"--relay-rate", "50M", "--relay-burst", "2M"}, []string{"--rate", "20M"}, 50 << 20, 2 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			ts := startServer(t, dir, append([]string{"--relay"}, tc.serverFlags...)...)
			apiKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--data-dir", dir))
			ok(t, "admin", "--server", ts.url, "--api-key", apiKey, "users", "create", "alice")
			authKey := strings.TrimSpace(ok(t, "admin", "--server", ts.url, "--api-key", apiKey, "authkeys", "create", "--user", "alice"))
			spub, err := noise.ParsePublicKey(ts.pub)
			if err != nil {
				t.Fatal(err)
			}
			nk, _ := noise.GeneratePrivateKey()
			cl, err := client.New(client.Config{ServerURL: ts.url, ServerKey: pubkey.Server{PublicKey: spub}, NodeKey: nk, Logger: logtest.T(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := cl.Register(ctx, authKey, "node", nil); err != nil {
				t.Fatal(err)
			}
			info := func(url string, rk noise.PublicKey) relay.ServerInfo {
				t.Helper()
				c, err := relay.Dial(ctx, url, pubkey.Relay{PublicKey: rk}, nk, relay.DialOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				return c.Info()
			}
			if got := info(ts.url, spub); got.Rate != tc.rate || got.Burst != tc.burst {
				t.Errorf("embedded relay announces rate %d burst %d; want %d %d", got.Rate, got.Burst, tc.rate, tc.burst)
			}

			relayKey := strings.TrimSpace(ok(t, "server", "apikey", "create", "--scope", "relay", "--data-dir", dir))
			fs, rc := relayFlags(&lockedBuffer{})
			args := []string{"--listen", "127.0.0.1:0", "--stun-listen", "", "--data-dir", filepath.Join(t.TempDir(), "relay"),
				"--server", ts.url, "--relay-key", relayKey}
			if err := fs.Parse(append(args, tc.relayFlg...)); err != nil {
				t.Fatal(err)
			}
			if err := rc.check(); err != nil {
				t.Fatal(err)
			}
			rurl, rpub, _ := startRelayCmd(t, rc)
			want, wantBurst := int64(0), int64(0)
			if tc.relayFlg != nil {
				want, wantBurst = 20<<20, relayserver.DefaultBurst
			}
			if got := info(rurl, rpub); got.Rate != want || got.Burst != wantBurst {
				t.Errorf("standalone relay announces rate %d burst %d; want %d %d", got.Rate, got.Burst, want, wantBurst)
			}
		})
	}
}

// TestServerRelayLimitsConfig: the embedded relay's limits come from the
// config file too (strings or numbers), flags win, and bad values are
// one-line errors naming the flag.
func TestServerRelayLimitsConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "server.json")
	if err := os.WriteFile(cfg, []byte(`{"relay": true, "relay_rate": "100M", "relay_burst": 4194304, "relay_queue": 512}`), 0o600); err != nil {
		t.Fatal(err)
	}
	resolve := func(args ...string) (relayserver.Options, error) {
		sf := newServerFlags("server", &lockedBuffer{}, true)
		if err := sf.fs.Parse(append([]string{"--config", cfg}, args...)); err != nil {
			t.Fatal(err)
		}
		c, err := sf.resolve()
		if err != nil {
			return relayserver.Options{}, err
		}
		return c.relayOptions()
	}
	o, err := resolve()
	if err != nil || o.Rate != 100<<20 || o.Burst != 4<<20 || o.QueuePackets != 512 {
		t.Fatalf("from the config file: %+v %v", o, err)
	}
	if o, err = resolve("--relay-rate", "1G"); err != nil || o.Rate != 1<<30 || o.Burst != 4<<20 {
		t.Fatalf("flag over the file: %+v %v", o, err)
	}
	for _, tc := range []struct{ flag, value, want string }{
		{"--relay-rate", "fast", `--relay-rate: "fast" is not a byte count`},
		{"--relay-queue", "-3", `--relay-queue "-3": want a positive number of packets`},
	} {
		if _, err := resolve(tc.flag, tc.value); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v; want %q", tc.flag, tc.value, err, tc.want)
		}
	}
}
