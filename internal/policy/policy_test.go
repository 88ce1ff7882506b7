package policy

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/warrenmesh/warren/internal/filter"
)

const example = `{
	// engineers reach the databases on 5432 only
	"groups": {"group:eng": ["alice@", "bob@",]},
	"tagOwners": {"tag:db": ["group:eng"], "tag:web": ["carol@"]},
	"hosts": {"office": "192.168.10.0/24", "printer": "fd00::9"},
	"acls": [
		{"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"], "proto": "tcp"},
		{"action": "accept", "src": ["office"], "dst": ["tag:web:80,443"]},
		{"action": "accept", "src": ["*"], "dst": ["autogroup:self:*"]},
		{"action": "accept", "src": ["tag:web"], "dst": ["[fd00::9]:631", "carol@:22"], "proto": "udp"},
	],
	"tests": [
		{"src": "alice@", "accept": ["tag:db:5432"], "deny": ["tag:db:22", "tag:web:80"]},
		{"src": "tag:db", "deny": ["alice@:22", "bob@:5432"]},
		{"src": "192.168.10.7", "accept": ["tag:web:443"], "deny": ["tag:web:8080"]},
		{"src": "alice@", "accept": ["alice@:22"], "deny": ["bob@:22"]},
		{"src": "tag:web", "proto": "udp", "accept": ["printer:631"], "deny": ["printer:632"]},
	],
}`

func TestExample(t *testing.T) {
	p, err := Check([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if !p.TagOwnedBy("tag:db", "bob") || p.TagOwnedBy("tag:db", "carol") || !p.TagOwnedBy("tag:web", "carol") || p.TagOwnedBy("tag:nope", "alice") {
		t.Fatal("TagOwnedBy")
	}
}

// errAt returns the line:column prefix an error must start with.
func TestErrors(t *testing.T) {
	cases := []struct {
		name, text, want string
	}{
		{"syntax", "{\n  \"acls\": [\n    {\"action\" \"accept\"}\n  ]\n}", "line 3, column 15:"},
		{"not object", "[]", "line 1, column 1: a policy is a JSON object"},
		{"unknown top", "{\n  \"acl\": []\n}", `line 2, column 3: unknown field "acl"`},
		{"unknown in acl", "{\"acls\": [\n {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"],\n  \"ports\": 5}]}", `line 3, column 3: unknown field "ports" in acls`},
		{"duplicate", "{\"groups\": {}, \"groups\": {}}", `line 1, column 16: duplicate key "groups"`},
		{"type", "{\n\"acls\": [{\"action\": \"accept\", \"src\": \"*\", \"dst\": [\"*:*\"]}]}", `line 2, column 38: "acls.src": expected []string, found string`},
		{"bad action", "{\"acls\": [\n{\"action\": \"drop\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}", `line 2, column 12: action must be "accept"`},
		{"unknown group", "{\"acls\": [\n  {\"action\": \"accept\",\n   \"src\": [\"*\", \"group:ops\"], \"dst\": [\"*:*\"]}]}", `line 3, column 17: group "group:ops" is not defined`},
		{"unknown tag dst", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"],\n \"dst\": [\"tag:db:22\"]}]}", `line 2, column 10: tag "tag:db" is not defined in tagOwners`},
		{"bare user", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice\"], \"dst\": [\"*:*\"]}]}", `line 1, column 40: unknown alias "alice"`},
		{"no ports", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"alice@\"]}]}", "must be ALIAS:PORTS"},
		{"bad port", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:99999\"]}]}", "bad port"},
		{"bad proto", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"], \"proto\": \"sctp\"}]}", "line 1, column 71: unknown proto"},
		{"icmp ports", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"], \"proto\": \"icmp\"}]}", "ports do not apply to icmp"},
		{"group member", "{\"groups\": {\"group:a\": [\"alice@\", \"group:b\"]}}", `line 1, column 35: group members are users`},
		{"bad tag", "{\"tagOwners\": {\"tag:a b\": []}}", `invalid tag "tag:a b"`},
		{"bad host", "{\"hosts\": {\"h\": \"not-an-ip\"}}", `line 1, column 17: host "h"`},
		{"self in src", "{\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:self\"], \"dst\": [\"*:*\"]}]}", "only autogroup:self and autogroup:internet, as destinations"},
		{"test group src", "{\"groups\": {\"group:a\": []}, \"tests\": [{\"src\": \"group:a\", \"accept\": [\"*:1\"]}]}", "cannot be used in a test"},
		{"test range", "{\"tests\": [{\"src\": \"a@\", \"accept\": [\"b@:1-2\"]}]}", "must name one port"},
		{"test empty", "{\"tests\": [{\"src\": \"a@\"}]}", "neither accept nor deny"},
		{"comment offsets", "{\n  /* a comment\n     on two lines */ \"acls\": [{\"action\": \"accept\", \"src\": [\"nobody\"], \"dst\": [\"*:*\"]}]}", `line 3, column 60: unknown alias "nobody"`},
	}
	for _, c := range cases {
		_, err := Check([]byte(c.text))
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want %q", c.name, err, c.want)
		}
		var pe *Error
		if strings.HasPrefix(c.want, "line ") && !errors.As(err, &pe) {
			t.Errorf("%s: not an *Error", c.name)
		}
	}
}

func TestFailingTests(t *testing.T) {
	text := `{
	"groups": {"group:a": ["alice@"]},
	"tagOwners": {"tag:db": []},
	"acls": [{"action": "accept", "src": ["group:a"], "dst": ["tag:db:5432"]}],
	"tests": [
		{"src": "alice@", "accept": ["tag:db:5432", "tag:db:22"]},
		{"src": "tag:db", "deny": ["alice@:1"], "accept": ["alice@:2"]},
	],
}`
	p, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	err = p.RunTests()
	if err == nil {
		t.Fatal("failing tests passed")
	}
	msg := err.Error()
	for _, want := range []string{
		`line 6, column 47: test failed: tcp from alice@ to tag:db:22 is denied, the test expects it accepted`,
		`line 7, column 54: test failed: tcp from tag:db to alice@:2 is denied`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "5432") || strings.Contains(msg, "alice@:1") {
		t.Errorf("passing cases reported:\n%s", msg)
	}
}

func TestEmptyPolicyDeniesAll(t *testing.T) {
	p, err := Check([]byte(`{"tests": [{"src": "a@", "deny": ["b@:22"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	f := p.Compile([]Node{{ID: 1, User: "a"}})
	if b, _ := json.Marshal(f[1]); string(b) != `{"rules":[]}` {
		t.Fatalf("%s", b)
	}
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestCompile(t *testing.T) {
	p, err := Check([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	nodes := []Node{
		{ID: 1, User: "alice", Addrs: pfx("100.64.0.1/32", "fd00::1/128")},
		{ID: 2, User: "bob", Addrs: pfx("100.64.0.2/32", "fd00::2/128")},
		{ID: 3, User: "alice", Tags: []string{"tag:db"}, Addrs: pfx("100.64.0.3/32", "fd00::3/128")},
		{ID: 4, User: "carol", Tags: []string{"tag:web"}, Addrs: pfx("100.64.0.4/32")},
		{ID: 5, User: "carol", Addrs: pfx("100.64.0.5/32")},
		{ID: 6, User: "alice", Addrs: pfx("100.64.0.6/32")},
	}
	got := p.Compile(nodes)
	js := func(id uint64) string { b, _ := json.Marshal(got[id]); return string(b) }
	want := map[uint64]string{
		// The db node is tagged: alice's own-devices rule does not reach it.
		3: `{"rules":[{"src":["100.64.0.1/32","100.64.0.2/32","100.64.0.6/32","fd00::1/128","fd00::2/128"],"protos":[6],"ports":["5432"]}]}`,
		4: `{"rules":[{"src":["192.168.10.0/24"],"protos":[6,17,1,58],"ports":["80","443"]}]}`,
		1: `{"rules":[{"src":["100.64.0.1/32","100.64.0.6/32","fd00::1/128"],"protos":[6,17,1,58]}]}`,
		2: `{"rules":[{"src":["100.64.0.2/32","fd00::2/128"],"protos":[6,17,1,58]}]}`,
		5: `{"rules":[{"src":["100.64.0.5/32"],"protos":[6,17,1,58]},{"src":["100.64.0.4/32"],"protos":[17],"ports":["22"]}]}`,
	}
	for id, w := range want {
		if g := js(id); g != w {
			t.Errorf("node %d:\n got %s\nwant %s", id, g, w)
		}
	}
	// The compiled filter enforces what the tests say.
	f := filter.New(0)
	spec, err := filter.ParseSpec([]byte(js(3)))
	if err != nil {
		t.Fatal(err)
	}
	f.Set(spec)
	if len(spec.Rules) != 1 {
		t.Fatal(spec)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`))
	f.Add([]byte("{/* c */ \"hosts\": {\"h\": \"10.0.0.0/8\",},}"))
	f.Add([]byte(`{"tests": [{"src": "[::1]", "accept": ["[fd00::1]:22"]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) && (pe.Line < 0 || pe.Column < 0) {
				t.Fatalf("bad position in %v", err)
			}
			return
		}
		p.RunTests()
		p.Compile([]Node{{ID: 1, User: "alice", Addrs: pfx("100.64.0.1/32")}, {ID: 2, User: "bob", Tags: []string{"tag:db"}, Addrs: pfx("fd00::2/128")}})
	})
}

func TestParseLeavesInputAlone(t *testing.T) {
	in := []byte(example)
	if _, err := Check(in); err != nil {
		t.Fatal(err)
	}
	if string(in) != example {
		t.Fatal("Parse modified its input")
	}
}
