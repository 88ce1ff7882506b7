package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/warrenmesh/warren/internal/config"
	"github.com/warrenmesh/warren/internal/control/oidcauth"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/store"
)

// oidcAuth builds sign-in from the config (nil when oidc_issuer is unset)
// and mounts it on mux at /oidc/. onRegister completes interactive node
// registrations.
func oidcAuth(ctx context.Context, mux *http.ServeMux, cfg *config.Config, st *store.Store, logger *slog.Logger,
	onRegister func(context.Context, *http.Request, string, *store.User, string) (string, error)) (*oidcauth.Auth, error) {
	issuer := config.Get(cfg, config.ServerOIDCIssuer)
	if issuer == "" {
		return nil, nil
	}
	secret, err := readSecretFile(config.Get(cfg, config.ServerOIDCClientSecretFile))
	if err != nil {
		return nil, fmt.Errorf("oidc_client_secret_file: %w", err)
	}
	a, err := oidcauth.New(ctx, st, oidcauth.Config{
		Issuer:               issuer,
		ClientID:             config.Get(cfg, config.ServerOIDCClientID),
		ClientSecret:         secret,
		Scopes:               config.Get(cfg, config.ServerOIDCScopes),
		RedirectURL:          strings.TrimSuffix(config.Get(cfg, config.ServerPublicURL), "/") + oidcauth.CallbackPath,
		AllowedDomains:       config.Get(cfg, config.ServerOIDCAllowedDomains),
		AllowedUsers:         config.Get(cfg, config.ServerOIDCAllowedUsers),
		AllowedGroups:        config.Get(cfg, config.ServerOIDCAllowedGroups),
		GroupsClaim:          config.Get(cfg, config.ServerOIDCGroupsClaim),
		AllowUnverifiedEmail: config.Get(cfg, config.ServerOIDCAllowUnverifiedEmail),
		AdminUsers:           config.Get(cfg, config.ServerOIDCAdminUsers),
		AdminGroups:          config.Get(cfg, config.ServerOIDCAdminGroups),
		CreateUsers:          config.Get(cfg, config.ServerOIDCCreateUsers),
		SessionTTL:           config.Get(cfg, config.ServerOIDCSessionTTL),
		Logger:               logger,
		OnRegister:           onRegister,
	})
	if err != nil {
		return nil, err
	}
	mux.Handle(oidcauth.Prefix, a.Handler())
	return a, nil
}

// interactiveOptions enable `warren up` without an auth key when sign-in
// is configured (nil otherwise).
func interactiveOptions(cfg *config.Config) *server.Interactive {
	if config.Get(cfg, config.ServerOIDCIssuer) == "" {
		return nil
	}
	base := strings.TrimSuffix(config.Get(cfg, config.ServerPublicURL), "/")
	return &server.Interactive{
		LoginURL:  func(id string) string { return base + oidcauth.RegisterURL(id) },
		KeyExpiry: config.Get(cfg, config.ServerNodeKeyExpiry),
		Approval:  config.Get(cfg, config.ServerNodeApproval),
	}
}

// readSecretFile reads a one-line secret from a regular file that group
// and others may not read.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by group or others (mode %04o); run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" || strings.ContainsAny(s, "\r\n") {
		return "", errors.New(path + ": want the secret on one line")
	}
	return s, nil
}
