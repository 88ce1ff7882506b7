// Package config owns the settings of `warren server` and `warren relay`:
// each key is declared once (name, type, default, help text, whether a
// SIGHUP re-reads it) in a Schema, and its flag (--ipv4-prefix), its
// environment variable (WARREN_IPV4_PREFIX) and its YAML key (ipv4_prefix)
// are derived from that declaration. A value comes from, highest first:
// a flag given on the command line, the environment, the config file
// (YAML; default /etc/warren/server.yaml or relay.yaml, --config to name
// another), the declared default.
//
// The layering is done by koanf (github.com/knadh/koanf/v2): its providers
// are exactly the layers (posflag yields only the flags that were set on a
// github.com/spf13/pflag FlagSet, which is what cobra commands use; env
// maps WARREN_* names onto keys), it is modular with few dependencies, and
// it keeps no global state. ff v3 binds only the standard library's flag
// package; viper is case-insensitive, global by default and brings a large
// dependency tree. None of them reports file lines, so the file is read
// with gopkg.in/yaml.v3 as a yaml.Node: an unknown key or a bad value is a
// one-line error naming the file, line and key. Values are checked as each
// layer is read (so an error names where the value came from); the layers
// then hold canonical text, merged by koanf, and parsed into typed values
// by Get.
//
// A JSON file (the config format before YAML; named *.json*) is
// still read, with the same keys, for one release, and a deprecation
// warning is logged once.
package config

import (
	"fmt"
	"strings"
)

// EnvPrefix starts every environment variable of a key.
const EnvPrefix = "WARREN_"

// Schema is the set of keys of one command.
type Schema struct {
	// Command is the command's name ("server", "relay"); DefaultFile is
	// read when no --config is given, if it exists.
	Command, DefaultFile string
	specs                []*spec
	byName               map[string]*spec
	// validate checks the keys that go together (after all layers).
	validate func(*Config) error
}

// spec is one key's declaration.
type spec struct {
	name, help string
	kind       kind
	def        any
	reloadable bool
	secret     bool // never printed (credentials)
}

// FlagName is --flag-name of a key (snake_case to kebab-case).
func (s *spec) FlagName() string { return strings.ReplaceAll(s.name, "_", "-") }

// EnvName is the environment variable of a key.
func (s *spec) EnvName() string { return EnvPrefix + strings.ToUpper(s.name) }

// Key is a declared key whose value is a T.
type Key[T any] struct{ s *spec }

// Name is the key's name in the config file.
func (k Key[T]) Name() string { return k.s.name }

// Flag is the key's flag, without the dashes.
func (k Key[T]) Flag() string { return k.s.FlagName() }

// Env is the key's environment variable.
func (k Key[T]) Env() string { return k.s.EnvName() }

// Option modifies a declaration.
type Option func(*spec)

// Reloadable marks a key that a running server re-reads on SIGHUP.
var Reloadable Option = func(s *spec) { s.reloadable = true }

// Secret marks a credential: its value is never printed.
var Secret Option = func(s *spec) { s.secret = true }

func newSchema(command string) *Schema {
	return &Schema{Command: command, DefaultFile: "/etc/warren/" + command + ".yaml", byName: map[string]*spec{}}
}

func declare[T any](sc *Schema, name string, k kind, def, help string, opts []Option) Key[T] {
	if _, dup := sc.byName[name]; dup || strings.ContainsAny(name, "-. ") || name != strings.ToLower(name) {
		panic("config: bad or duplicate key " + name)
	}
	v, err := k.parse(def)
	if err != nil {
		panic(fmt.Sprintf("config: default of %s: %v", name, err))
	}
	if _, ok := v.(T); !ok {
		panic("config: kind of " + name + " does not give its type")
	}
	s := &spec{name: name, help: help, kind: k, def: v}
	for _, o := range opts {
		o(s)
	}
	sc.specs = append(sc.specs, s)
	sc.byName[name] = s
	return Key[T]{s}
}

func (sc *Schema) str(name, def, help string, o ...Option) Key[string] {
	return declare[string](sc, name, stringKind{}, def, help, o)
}

func (sc *Schema) checked(name, def, help string, check func(string) error, o ...Option) Key[string] {
	return declare[string](sc, name, stringKind{check}, def, help, o)
}

func (sc *Schema) boolean(name string, help string, o ...Option) Key[bool] {
	return declare[bool](sc, name, boolKind{}, "false", help, o)
}

func (sc *Schema) integer(name, def, help string, o ...Option) Key[int64] {
	return declare[int64](sc, name, intKind{}, def, help, o)
}

func (sc *Schema) url(name, help string, o ...Option) Key[string] {
	return declare[string](sc, name, urlKind{}, "", help, o)
}

func (sc *Schema) hosts(name, help string, o ...Option) Key[[]string] {
	return declare[[]string](sc, name, hostsKind{}, "", help, o)
}

func (sc *Schema) words(name, def, help string, o ...Option) Key[[]string] {
	return declare[[]string](sc, name, wordsKind{}, def, help, o)
}

// Keys lists the schema's keys in declaration order: name, flag,
// environment variable, type, default, reloadable, help.
func (sc *Schema) Keys() []KeyInfo {
	out := make([]KeyInfo, 0, len(sc.specs))
	for _, s := range sc.specs {
		out = append(out, KeyInfo{Name: s.name, Flag: s.FlagName(), Env: s.EnvName(), Type: s.kind.typeName(),
			Default: s.kind.format(s.def), Reloadable: s.reloadable, Secret: s.secret, Help: s.help})
	}
	return out
}

// KeyInfo describes a key (for docs and tests).
type KeyInfo struct {
	Name, Flag, Env, Type, Default string
	Reloadable, Secret             bool
	Help                           string
}
