package policy

import (
	"strings"
	"testing"
)

// TestMayUseRelay: the peerRelays rules decide who may use which peer
// relay; no policy allows everyone, a policy without rules no one.
func TestMayUseRelay(t *testing.T) {
	p, err := Check([]byte(`{
		"groups": {"group:eng": ["alice@"]},
		"tagOwners": {"tag:relay": ["alice@"], "tag:ci": ["alice@"]},
		"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
		"peerRelays": [
			{"relay": ["tag:relay"], "users": ["group:eng", "tag:ci"]},
		],
	}`))
	if err != nil {
		t.Fatal(err)
	}
	relay := &Node{ID: 1, User: "alice", Tags: []string{"tag:relay"}}
	alice := &Node{ID: 2, User: "alice"}
	ci := &Node{ID: 3, User: "bob", Tags: []string{"tag:ci"}}
	bob := &Node{ID: 4, User: "bob"}
	other := &Node{ID: 5, User: "alice"} // not tagged relay
	for _, tc := range []struct {
		user, relay *Node
		want        bool
	}{{alice, relay, true}, {ci, relay, true}, {bob, relay, false}, {alice, other, false}, {relay, relay, false}} {
		if got := p.MayUseRelay(tc.user, tc.relay); got != tc.want {
			t.Errorf("MayUseRelay(%d, %d) = %v, want %v", tc.user.ID, tc.relay.ID, got, tc.want)
		}
	}
	var none *Policy
	if !none.MayUseRelay(bob, relay) {
		t.Error("no policy: refused")
	}
	empty, err := Check([]byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if empty.MayUseRelay(alice, relay) {
		t.Error("a policy without peerRelays rules allowed a peer relay")
	}
}

// TestPeerRelayRuleErrors: bad rules are refused with their position.
func TestPeerRelayRuleErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{`{"peerRelays": [{"relay": ["tag:nope"], "users": ["*"]}]}`, `line 1, column 28: tag "tag:nope" is not defined`},
		{`{"peerRelays": [{"relay": ["*"]}]}`, "peer relay rule without users"},
		{`{"peerRelays": [{"relay": ["*"], "users": ["*"], "ports": [1]}]}`, `unknown field "ports" in peerRelays`},
		{`{"peerRelays": [{"relay": ["autogroup:internet"], "users": ["*"]}]}`, "not supported here"},
		{`{"peerRelays": {"relay": ["*"]}}`, `"peerRelays" must be a list`},
	} {
		_, err := Check([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.text, err, tc.want)
		}
	}
}
