package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// yamlLine is how yaml.v3 places a syntax error.
var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// parseFile reads a YAML (or, deprecated, JSON) config file into layer
// values: each key's canonical text and, beside it, "FILE:LINE". Unknown
// keys, duplicate keys and bad values are errors naming file, line and
// key. In a JSON file (the old format) an empty string or null leaves a
// key at its default, as it did; in YAML null does.
func (sc *Schema) parseFile(path string, b []byte) (map[string]any, bool, error) {
	isJSON := strings.Contains(strings.ToLower(filepath.Base(path)), ".json") // server.json, server.json.example
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			return nil, isJSON, fmt.Errorf("%s:%s: %s", path, m[1], m[2])
		}
		return nil, isJSON, fmt.Errorf("%s: %s", path, msg)
	}
	out := map[string]any{}
	if len(doc.Content) == 0 { // empty file: all defaults
		return out, isJSON, nil
	}
	m := doc.Content[0]
	if m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return out, isJSON, nil
	}
	if m.Kind != yaml.MappingNode {
		return nil, isJSON, fmt.Errorf("%s:%d: want a mapping of keys to values (key: value lines)", path, m.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn, vn := m.Content[i], m.Content[i+1]
		at := fmt.Sprintf("%s:%d", path, kn.Line)
		s := sc.byName[kn.Value]
		if s == nil {
			return nil, isJSON, fmt.Errorf("%s: unknown key %q%s", at, kn.Value, sc.suggest(kn.Value))
		}
		if line, dup := seen[kn.Value]; dup {
			return nil, isJSON, fmt.Errorf("%s: key %q given twice (first on line %d)", at, kn.Value, line)
		}
		seen[kn.Value] = kn.Line
		val, ok, err := nodeText(s, vn, isJSON)
		if err != nil {
			return nil, isJSON, fmt.Errorf("%s:%d: %s: %v", path, vn.Line, s.name, err)
		}
		if !ok {
			continue
		}
		txt, err := s.text(val)
		if err != nil {
			return nil, isJSON, fmt.Errorf("%s:%d: %v", path, vn.Line, err)
		}
		out[s.name] = txt
		out[srcPrefix+s.name] = at
	}
	return out, isJSON, nil
}

// nodeText turns a value node into the text a flag would carry; ok is
// false for a value that leaves the key at its default.
func nodeText(s *spec, n *yaml.Node, isJSON bool) (string, bool, error) {
	switch n.Kind {
	case yaml.AliasNode:
		return nodeText(s, n.Alias, isJSON)
	case yaml.ScalarNode:
		if n.Tag == "!!null" || (isJSON && n.Tag == "!!str" && n.Value == "") {
			return "", false, nil
		}
		return n.Value, true, nil
	case yaml.SequenceNode:
		_, hosts := s.kind.(hostsKind)
		if _, words := s.kind.(wordsKind); !hosts && !words {
			return "", false, fmt.Errorf("want a single %s, not a list", s.kind.typeName())
		}
		items := make([]string, 0, len(n.Content))
		for _, it := range n.Content {
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				return "", false, fmt.Errorf("want a list of %s", s.kind.typeName())
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), true, nil
	default:
		return "", false, fmt.Errorf("want a %s, not a mapping", s.kind.typeName())
	}
}

// suggest names a known key close to an unknown one (a flag's spelling,
// or another case).
func (sc *Schema) suggest(name string) string {
	n := strings.ToLower(strings.ReplaceAll(name, "-", "_"))
	if sc.byName[n] != nil {
		return fmt.Sprintf(" (did you mean %q?)", n)
	}
	return ""
}

// Check reads the config file at path as a command would, without the
// environment or flags, and returns the settings or the first problem:
// a one-line error naming file, line and key. A JSON file passes with a
// deprecation warning given to warn.
func (sc *Schema) Check(path string, warn func(string)) (*Config, error) {
	fs := pflag.NewFlagSet(sc.Command+" configtest", pflag.ContinueOnError)
	f := sc.Bind(fs)
	*f.config = path
	f.Environ = func() []string { return nil }
	return f.Load(warn)
}
