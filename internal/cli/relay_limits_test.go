package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/relay"
	"github.com/warrenmesh/warren/internal/relay/relayserver"
	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

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
			fs, rc := relayFlags()
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
// config file too, flags win, and bad values are one-line errors naming
// the flag.
func TestServerRelayLimitsConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfg, []byte("relay: true\nrelay_rate: 100M\nrelay_burst: 4194304\nrelay_queue: 512\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	resolve := func(args ...string) (rate, burst, queue int64, err error) {
		sf := newServerFlags("server", true)
		if err := sf.fs.Parse(append([]string{"--config", cfg}, args...)); err != nil {
			return 0, 0, 0, err
		}
		c, err := sf.resolve()
		if err != nil {
			return 0, 0, 0, err
		}
		return config.Get(c.cfg, config.ServerRelayRate), config.Get(c.cfg, config.ServerRelayBurst), config.Get(c.cfg, config.ServerRelayQueue), nil
	}
	if r, b, q, err := resolve(); err != nil || r != 100<<20 || b != 4<<20 || q != 512 {
		t.Fatalf("from the config file: %d %d %d %v", r, b, q, err)
	}
	if r, b, _, err := resolve("--relay-rate", "1G"); err != nil || r != 1<<30 || b != 4<<20 {
		t.Fatalf("flag over the file: %d %d %v", r, b, err)
	}
	for _, tc := range []struct{ flag, value, want string }{
		{"--relay-rate", "fast", `"fast" is not a byte count`},
		{"--relay-queue", "-3", `"-3" is not a whole number >= 0`},
		{"--relay-queue", "0", "relay_queue must be at least 1 packet"},
	} {
		if _, _, _, err := resolve(tc.flag, tc.value); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v; want %q", tc.flag, tc.value, err, tc.want)
		}
	}
}
