package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// srcPrefix holds, beside each key, where its value came from: every
// layer sets both, so that koanf's merge keeps them together.
const srcPrefix = "from."

// delim is koanf's key path separator: no key holds it, so keys stay flat.
const delim = "\x00"

// Flags is a Schema bound onto a FlagSet: --config and one flag per key.
type Flags struct {
	schema *Schema
	fs     *pflag.FlagSet
	config *string
	// Environ returns the environment (os.Environ by default; tests set
	// it).
	Environ func() []string

	warnOnce sync.Once
}

// flagValue is a key's pflag.Value: it checks the argument with the
// key's kind and keeps its canonical text.
type flagValue struct {
	s   *spec
	txt string
	err error // a secret's bad value, reported by Load (pflag would print it)
}

func (v *flagValue) String() string { return v.txt }
func (v *flagValue) Type() string   { return v.s.argName() }
func (v *flagValue) Set(a string) error {
	x, err := v.s.kind.parse(a)
	if err != nil && v.s.secret {
		v.err = err
		return nil
	}
	if err != nil {
		return err
	}
	v.err = nil
	v.txt = v.s.kind.format(x)
	return nil
}

// Bind adds --config and a flag for every key of sc to fs, or, when only
// names keys, for those keys alone (a subcommand such as `server key`
// needs only data_dir; Load still reads and checks every key of the file
// and the environment).
func (sc *Schema) Bind(fs *pflag.FlagSet, only ...string) *Flags {
	f := &Flags{schema: sc, fs: fs, Environ: os.Environ}
	f.config = fs.String("config", "", fmt.Sprintf("YAML config `FILE` (default %s if it exists; flags and %s* variables override it)", sc.DefaultFile, EnvPrefix))
	for _, name := range only {
		if sc.byName[name] == nil {
			panic("config: Bind: no key " + name)
		}
	}
	for _, s := range sc.specs {
		if len(only) > 0 && !slices.Contains(only, s.name) {
			continue
		}
		v := &flagValue{s: s, txt: s.kind.format(s.def)}
		fl := fs.VarPF(v, s.FlagName(), "", s.help+envNote(s))
		if _, ok := s.kind.(boolKind); ok {
			fl.NoOptDefVal = "true"
		}
	}
	return f
}

// argName is the name of the flag's argument in --help (pflag prints
// Type(); "bool" prints none).
func (s *spec) argName() string {
	switch {
	case s.kind.typeName() == "bool":
		return "bool"
	case strings.HasSuffix(s.name, "listen"):
		return "ADDR"
	case strings.HasSuffix(s.name, "_dir"):
		return "DIR"
	case s.name == "tls_cert" || s.name == "tls_key" || s.name == "relay_map" || strings.HasSuffix(s.name, "_file"):
		return "FILE"
	case s.secret && strings.HasSuffix(s.name, "_key"):
		return "KEY"
	}
	switch s.name {
	case "db":
		return "DSN"
	case "domain":
		return "DOMAIN"
	case "tls_acme_email":
		return "EMAIL"
	case "rate", "burst", "relay_rate", "relay_burst":
		return "BYTES"
	case "queue", "relay_queue":
		return "PACKETS"
	case "log_level":
		return "LEVEL"
	case "log_format":
		return "FORMAT"
	case "oidc_client_id":
		return "ID"
	case "oidc_groups_claim":
		return "CLAIM"
	case "oidc_allowed_domains":
		return "DOMAINS"
	case "oidc_allowed_users", "oidc_admin_users":
		return "EMAILS"
	case "oidc_allowed_groups", "oidc_admin_groups":
		return "GROUPS"
	case "oidc_scopes":
		return "SCOPES"
	}
	switch t := s.kind.typeName(); t {
	case "names":
		return "HOSTS"
	case "int":
		return "N"
	default:
		return strings.ToUpper(t)
	}
}

func envNote(s *spec) string {
	if s.reloadable {
		return " (env " + s.EnvName() + "; re-read on SIGHUP)"
	}
	return " (env " + s.EnvName() + ")"
}

// ConfigFile is the file Load reads: --config, or the schema's default
// file when it exists ("" when neither).
func (f *Flags) ConfigFile() (path string, explicit bool) {
	if *f.config != "" {
		return *f.config, true
	}
	if _, err := os.Stat(f.schema.DefaultFile); err == nil {
		return f.schema.DefaultFile, false
	}
	return "", false
}

// Load reads the layers (defaults, file, environment, flags set on the
// command line) into a Config. A deprecation warning (a JSON file) goes
// to warn, once per Flags.
func (f *Flags) Load(warn func(string)) (*Config, error) {
	path, explicit := f.ConfigFile()
	var file map[string]any
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil && !explicit && errors.Is(err, fs.ErrNotExist) {
			path = "" // the default file went away meanwhile
		} else if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		} else {
			fv, isJSON, err := f.schema.parseFile(path, b)
			if err != nil {
				return nil, err
			}
			if isJSON && warn != nil {
				f.warnOnce.Do(func() { warn(jsonDeprecation(path)) })
			}
			file = fv
		}
	}
	k := koanf.New(delim)
	defaults := map[string]any{}
	for _, s := range f.schema.specs {
		defaults[s.name] = s.kind.format(s.def)
		defaults[srcPrefix+s.name] = "default"
	}
	if err := k.Load(confmap.Provider(defaults, delim), nil); err != nil {
		return nil, err
	}
	if err := k.Load(confmap.Provider(file, delim), nil); err != nil {
		return nil, err
	}
	var envErr error
	envVals := map[string]any{}
	if err := k.Load(env.Provider(delim, env.Opt{Prefix: EnvPrefix, EnvironFunc: f.Environ,
		TransformFunc: func(name, val string) (string, any) {
			s := f.schema.byName[strings.ToLower(strings.TrimPrefix(name, EnvPrefix))]
			if s == nil || s.EnvName() != name {
				return "", nil // not ours (WARREN_REQUIRE_NETNS, ...)
			}
			txt, err := s.text(val)
			if err != nil && envErr == nil {
				envErr = fmt.Errorf("$%s: %v", name, err)
			}
			envVals[srcPrefix+s.name] = "$" + name
			return s.name, txt
		}}), nil); err != nil {
		return nil, err
	}
	if envErr != nil {
		return nil, envErr
	}
	if err := k.Load(confmap.Provider(envVals, delim), nil); err != nil {
		return nil, err
	}
	var flagErr error
	// VisitAll and Changed, not Visit: a cobra command that adds this
	// FlagSet to its own parses that one, and only the flags (shared)
	// know they were set.
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if v, ok := fl.Value.(*flagValue); ok && fl.Changed && v.err != nil && flagErr == nil {
			flagErr = fmt.Errorf("--%s: %v", fl.Name, v.err)
		}
	})
	if flagErr != nil {
		return nil, flagErr
	}
	flagKey := func(fl *pflag.Flag) (string, any) {
		v, ok := fl.Value.(*flagValue)
		if !ok || f.schema.byName[v.s.name] != v.s {
			return "", nil // another flag of the command
		}
		return v.s.name, v.txt
	}
	if err := k.Load(posflag.ProviderWithFlag(f.fs, delim, nil, flagKey), nil); err != nil {
		return nil, err
	}
	if err := k.Load(posflag.ProviderWithFlag(f.fs, delim, nil, func(fl *pflag.Flag) (string, any) {
		if name, _ := flagKey(fl); name != "" {
			return srcPrefix + name, "--" + fl.Name
		}
		return "", nil
	}), nil); err != nil {
		return nil, err
	}
	c := &Config{schema: f.schema, File: path, vals: map[string]any{}, from: map[string]string{}}
	for _, s := range f.schema.specs {
		v, err := s.kind.parse(k.String(s.name))
		if err != nil { // checked as each layer was read
			return nil, fmt.Errorf("config: %s: %v", s.name, err)
		}
		c.vals[s.name], c.from[s.name] = v, k.String(srcPrefix+s.name)
	}
	if f.schema.validate != nil {
		if err := f.schema.validate(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// text checks a value with the key's kind and returns its canonical text
// (kinds of secret keys do not repeat the value in errors).
func (s *spec) text(val string) (string, error) {
	x, err := s.kind.parse(val)
	if err != nil {
		return "", fmt.Errorf("%s: %v", s.name, err)
	}
	return s.kind.format(x), nil
}

func jsonDeprecation(path string) string {
	return fmt.Sprintf("config %s: JSON config files are deprecated and will not be read after the next release; write the same keys as YAML (see docs/CONFIG.md)", path)
}

// Config is the settings a command runs with.
type Config struct {
	schema *Schema
	// File is the config file read ("" if none).
	File string
	vals map[string]any
	from map[string]string
}

// Get returns the value of k in c.
func Get[T any](c *Config, k Key[T]) T { return c.vals[k.s.name].(T) }

// From says where the value of the key came from: "default", "--flag",
// "$WARREN_KEY" or "FILE:LINE".
func (c *Config) From(name string) string { return c.from[name] }

// Changed compares c with the config prev ran with and lists the keys
// whose values differ: those a SIGHUP applies, and those that need a
// restart.
func (c *Config) Changed(prev *Config) (reload, restart []string) {
	for _, s := range c.schema.specs {
		if s.kind.format(c.vals[s.name]) == s.kind.format(prev.vals[s.name]) {
			continue
		}
		if s.reloadable {
			reload = append(reload, s.name)
		} else {
			restart = append(restart, s.name)
		}
	}
	return reload, restart
}

// Print writes the effective settings as YAML, with where each came from
// (secrets hidden).
func (c *Config) Print(w interface{ Write([]byte) (int, error) }) {
	for _, s := range c.schema.specs {
		v := s.kind.format(c.vals[s.name])
		if s.secret && v != "" {
			v = "(secret)"
		}
		fmt.Fprintf(w, "%s: %q # %s\n", s.name, v, c.from[s.name])
	}
}
