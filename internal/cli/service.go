package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/tlsserve"
)

// What `warren server` and `warren relay` share beyond their listener
// (listen.go): the logger their config asks for (log_level, log_format;
// the level is a LevelVar a SIGHUP sets), their certificates (package
// tlsserve: PEM files or ACME), the ACME HTTP-01 listener, and the SIGHUP
// handler that re-reads the config's reloadable keys and the certificate
// files.

// serviceLogger is the logger of a long-running command's config c; level
// is set from log_level (and again on SIGHUP).
func serviceLogger(w io.Writer, c *config.Config, k config.LogKeys, level *slog.LevelVar) (*slog.Logger, error) {
	lv, err := parseLevel(config.Get(c, k.Level))
	if err != nil {
		return nil, err
	}
	level.Set(lv)
	h, err := logHandler(w, config.Get(c, k.Format), level)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// serviceCerts are the certificates of c's TLS keys (nil: plain HTTP);
// the ACME cache goes under dataDir.
func serviceCerts(c *config.Config, k config.TLSKeys, dataDir string, logger *slog.Logger) (*tlsserve.Certs, error) {
	return tlsserve.New(tlsserve.OptionsFrom(c, k, dataDir, logger))
}

// certNamesNow serves, for the Host check (httpguard.Policy.Also), the
// names of the certificate served now: a certificate reloaded on SIGHUP
// may name hosts the first one did not.
func certNamesNow(certs *tlsserve.Certs) func(string) bool {
	if certs == nil {
		return nil
	}
	return func(name string) bool {
		return slices.ContainsFunc(certs.Names(), func(n string) bool { return strings.EqualFold(strings.TrimSuffix(n, "."), name) })
	}
}

// serveHTTP01 starts the ACME HTTP-01 listener on addr (tls_acme_http_listen;
// "" starts none) until ctx ends; hosts are the names its Host check
// serves besides the certificates'.
func serveHTTP01(ctx context.Context, certs *tlsserve.Certs, addr string, hosts []string, logger *slog.Logger) error {
	if addr == "" || certs == nil {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tls_acme_http_listen: %v", err)
	}
	logger.Info("ACME HTTP-01 listening", "url", "http://"+l.Addr().String())
	go func() {
		if err := certs.ServeHTTP01(ctx, l, hosts...); err != nil {
			logger.Error("ACME HTTP-01 listener failed", "err", err)
		}
	}()
	return nil
}

// reloadOnSIGHUP makes a SIGHUP (systemctl reload) re-read the config
// file for the reloadable keys (package config logs what it applied and
// what needs a restart), set the log level, and re-read the certificate
// files. It returns once SIGHUP is caught: call it before READY=1.
func reloadOnSIGHUP(ctx context.Context, flags *config.Flags, cfg *config.Config, lk config.LogKeys, tk config.TLSKeys,
	level *slog.LevelVar, certs *tlsserve.Certs, logger *slog.Logger) {
	config.OnSIGHUP(ctx, func() {
		cfg = flags.Reload(cfg, logger)
		if lv, err := parseLevel(config.Get(cfg, lk.Level)); err == nil {
			level.Set(lv)
		}
		cert, key := config.Get(cfg, tk.Cert), config.Get(cfg, tk.Key)
		switch {
		case certs != nil:
			certs.Reload(cert, key) // logs the new certificate, or why the old one stays
		case cert != "":
			logger.Warn("config: tls_cert set, but the listener started without TLS: restart to serve HTTPS")
		}
	})
}
