package tlsserve_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/tlsserve"
)

// Example is how `warren server` uses packages config and tlsserve: its
// flags bound from the schema, the layers loaded, the listener served
// with the certificates, and SIGHUP re-reading the config's reloadable
// keys and the certificate files.
func Example() {
	dir, _ := os.MkdirTemp("", "warren-example-")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "server.yaml")
	os.WriteFile(file, []byte("listen: \"127.0.0.1:0\"\nlog_level: debug\n"), 0o600)

	fs := pflag.NewFlagSet("server", pflag.ContinueOnError) // cobra: cmd.Flags()
	flags := config.Server.Bind(fs)
	if err := fs.Parse([]string{"--config", file, "--data-dir", dir}); err != nil {
		fmt.Println(err)
		return
	}
	var level slog.LevelVar
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: &level}))
	cfg, err := flags.Load(func(w string) { log.Warn(w) })
	if err != nil {
		fmt.Println(err) // one line: file:line: key: problem
		return
	}
	level.UnmarshalText([]byte(config.Get(cfg, config.ServerLog.Level)))

	certs, err := tlsserve.New(tlsserve.OptionsFrom(cfg, config.ServerTLS, config.Get(cfg, config.ServerDataDir), log))
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := net.Listen("tcp", config.Get(cfg, config.ServerListen))
	if err != nil {
		fmt.Println(err)
		return
	}
	hs := &http.Server{Handler: http.NotFoundHandler()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	config.OnSIGHUP(ctx, func() {
		cfg = flags.Reload(cfg, log) // logs what it applied or why not
		level.UnmarshalText([]byte(config.Get(cfg, config.ServerLog.Level)))
		if certs != nil {
			certs.Reload(config.Get(cfg, config.ServerTLS.Cert), config.Get(cfg, config.ServerTLS.Key))
		}
	})
	if certs != nil {
		hs.TLSConfig = certs.TLSConfig()
		go hs.ServeTLS(l, "", "")
	} else {
		go hs.Serve(l)
	}
	defer hs.Close()
	fmt.Println("log level", config.Get(cfg, config.ServerLog.Level), "from", cfg.From("log_level") == file+":2", "tls", certs != nil)
	// Output: log level debug from true tls false
}
