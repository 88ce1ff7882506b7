package config

import (
	"errors"
	"net/netip"
	"strconv"

	"golang.org/x/crypto/acme/autocert"
)

type netipPrefix = netip.Prefix

func itoa[T int | int64](n T) string { return strconv.FormatInt(int64(n), 10) }

// TLSKeys are the TLS settings of the server and the relay.
type TLSKeys struct {
	// Cert and Key are PEM files, re-read on SIGHUP.
	Cert, Key Key[string]
	// ACME lists the names to obtain certificates for (autocert;
	// TLS-ALPN-01 on the listener, HTTP-01 on ACMEHTTPListen).
	ACME           Key[[]string]
	ACMEEmail      Key[string]
	ACMEDirectory  Key[string]
	ACMEHTTPListen Key[string]
}

func tlsKeys(sc *Schema) TLSKeys {
	return TLSKeys{
		Cert: sc.str("tls_cert", "",
			"serve HTTPS with this certificate (PEM, chain after the leaf; needs tls_key)", Reloadable),
		Key: sc.str("tls_key", "",
			"private key for tls_cert (PEM)", Reloadable),
		ACME: sc.hosts("tls_acme",
			"serve HTTPS with certificates for these names from an ACME CA (Let's Encrypt by default), cached in DATA_DIR/acme"),
		ACMEEmail: sc.str("tls_acme_email", "",
			"contact address given to the ACME CA (optional; expiry warnings go there)"),
		ACMEDirectory: declare[string](sc, "tls_acme_directory", urlKind{}, autocert.DefaultACMEDirectory,
			"the ACME CA's directory URL", nil),
		ACMEHTTPListen: sc.checked("tls_acme_http_listen", "",
			`also answer ACME HTTP-01 challenges on this address, e.g. ":80" (other requests there are redirected to https); TLS-ALPN-01 on the HTTPS listener needs nothing`, checkListen(false)),
	}
}

func checkTLS(c *Config, t TLSKeys) error {
	cert, key, acme := Get(c, t.Cert), Get(c, t.Key), Get(c, t.ACME)
	switch {
	case (cert == "") != (key == ""):
		return errors.New("config: tls_cert and tls_key go together")
	case cert != "" && len(acme) > 0:
		return errors.New("config: tls_cert and tls_acme: give one")
	case Get(c, t.ACMEHTTPListen) != "" && len(acme) == 0:
		return errors.New("config: tls_acme_http_listen needs tls_acme")
	}
	return nil
}

// LogKeys are the logging settings of a long-running command.
type LogKeys struct {
	Level, Format Key[string]
}

func logKeys(sc *Schema) LogKeys {
	return LogKeys{
		Level: declare[string](sc, "log_level", enumKind{[]string{"debug", "info", "warn", "error"}}, "info",
			"lowest level logged", []Option{Reloadable}),
		Format: declare[string](sc, "log_format", enumKind{[]string{"text", "json"}}, "text",
			"log line format", nil),
	}
}
