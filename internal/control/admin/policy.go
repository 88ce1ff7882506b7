package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/policy"
	"github.com/warrenmesh/warren/internal/tagname"
)

// Policy is the access policy in force as the API shows it.
type Policy struct {
	Policy  string     `json:"policy"`            // the HuJSON text; "" for none (allow all)
	Version int64      `json:"version"`           // 0: never set
	Updated *time.Time `json:"updated,omitempty"` // when this version was set
}

// PolicyProblem is the body of a refused policy: Error sums it up and
// Problems lists each problem as "line L, column C: ...".
type PolicyProblem struct {
	Error    string   `json:"error"`
	Problems []string `json:"problems"`
}

// PolicyCheck is the answer to a policy that passes the check.
type PolicyCheck struct {
	OK    bool `json:"ok"`
	Tests int  `json:"tests"` // test cases run
}

// The policy is sent and returned as the raw HuJSON text (any content
// type), so comments survive: PUT /api/v1/policy sets it once it parses,
// validates and passes its own tests; POST /api/v1/policy/check only
// checks; DELETE /api/v1/policy removes it (allow all).
func policyRoutes(a *api) []route {
	return []route{
		{"GET /api/v1/policy", a.getPolicy},
		{"PUT /api/v1/policy", a.setPolicy},
		{"DELETE /api/v1/policy", a.deletePolicy},
		{"POST /api/v1/policy/check", a.checkPolicy},
	}
}

func (a *api) getPolicy(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	p, err := a.st.Policy(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toPolicy(p.Text, p.ID, p.Created), nil
}

func toPolicy(text string, id int64, t time.Time) Policy {
	out := Policy{Policy: text, Version: id}
	if id != 0 {
		out.Updated = opt(t)
	}
	return out
}

// readPolicy reads and checks the body; a refusal is returned as the
// response (status, body) with ok false.
func readPolicy(w http.ResponseWriter, r *http.Request) (text []byte, p *policy.Policy, status int, body any, err error) {
	text, err = io.ReadAll(http.MaxBytesReader(w, r.Body, policy.MaxSize))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, nil, 0, nil, errorf(http.StatusRequestEntityTooLarge, "policy larger than %d bytes", policy.MaxSize)
	case err != nil:
		return nil, nil, 0, nil, errorf(http.StatusBadRequest, "reading the policy: %v", err)
	case len(strings.TrimSpace(string(text))) == 0:
		return nil, nil, 0, nil, errorf(http.StatusBadRequest, "empty policy (DELETE /api/v1/policy removes the policy)")
	}
	p, err = policy.Check(text)
	if err != nil {
		return nil, nil, http.StatusBadRequest, problemOf(err), nil
	}
	return text, p, 0, nil, nil
}

func problemOf(err error) PolicyProblem {
	lines := strings.Split(err.Error(), "\n")
	out := PolicyProblem{Error: "policy refused: " + strings.TrimSuffix(lines[0], ":")}
	if len(lines) > 1 {
		out.Problems = lines[1:]
	} else {
		out.Problems = lines
	}
	return out
}

func (a *api) checkPolicy(w http.ResponseWriter, r *http.Request) (int, any, error) {
	_, p, status, body, err := readPolicy(w, r)
	if err != nil || status != 0 {
		return status, body, err
	}
	return http.StatusOK, PolicyCheck{OK: true, Tests: len(p.Tests)}, nil
}

func (a *api) setPolicy(w http.ResponseWriter, r *http.Request) (int, any, error) {
	text, _, status, body, err := readPolicy(w, r)
	if err != nil || status != 0 {
		return status, body, err
	}
	sp, err := a.st.SetPolicy(r.Context(), string(text))
	if err != nil {
		return 0, nil, err
	}
	a.notify()
	return http.StatusOK, toPolicy(sp.Text, sp.ID, sp.Created), nil
}

func (a *api) deletePolicy(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	sp, err := a.st.SetPolicy(r.Context(), "")
	if err != nil {
		return 0, nil, err
	}
	a.notify()
	return http.StatusOK, toPolicy(sp.Text, sp.ID, sp.Created), nil
}

// checkTags refuses, when a key is created, tags its user may not use:
// every tag must be listed in the policy's tagOwners with the user, or a
// group of the user, as an owner. Without a policy no tag can be used.
func (a *api) checkTags(ctx context.Context, tags []string, user string) error {
	if len(tags) == 0 {
		return nil
	}
	for _, t := range tags {
		if err := tagname.Check(t); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
	}
	sp, err := a.st.Policy(ctx)
	if err != nil {
		return err
	}
	if sp.Text == "" {
		return errorf(http.StatusBadRequest, "no policy is set: tags must be declared in the policy's tagOwners first")
	}
	p, err := policy.Parse([]byte(sp.Text))
	if err != nil {
		return err
	}
	for _, t := range tags {
		if _, ok := p.TagOwners[t]; !ok {
			return errorf(http.StatusBadRequest, "tag %s is not declared in the policy's tagOwners", t)
		}
		if !p.TagOwnedBy(t, user) {
			return errorf(http.StatusForbidden, "user %s may not use tag %s (see tagOwners in the policy)", user, t)
		}
	}
	return nil
}

// TagsRequest is the body of PUT /api/v1/nodes/{node}/tags.
type TagsRequest struct {
	Tags []string `json:"tags"`
}

// tagNode gives a node new tags: each must be one its user may use (as for
// an auth key: the policy's tagOwners), and from then on the node is owned
// by its tags. Untagging is refused: a node goes back to a user by
// registering again with an untagged key.
func (a *api) tagNode(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req TagsRequest
	if err := decode(w, r, &req); err != nil {
		return 0, nil, err
	}
	if len(req.Tags) == 0 {
		return 0, nil, errorf(http.StatusBadRequest, "no tags given: a tagged node goes back to its user only by registering again with an untagged auth key")
	}
	n, err := a.nodeByRef(r.Context(), r.PathValue("node"))
	if err != nil {
		return 0, nil, err
	}
	names, err := a.userNames(r.Context())
	if err != nil {
		return 0, nil, err
	}
	if err := a.checkTags(r.Context(), req.Tags, names[n.UserID]); err != nil {
		return 0, nil, err
	}
	if err := a.st.SetNodeTags(r.Context(), n.ID, req.Tags); err != nil {
		return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
	}
	a.notify()
	got, err := a.st.GetNode(r.Context(), n.ID)
	if err != nil {
		return 0, nil, storeErr(err, "node "+strconv.FormatInt(n.ID, 10))
	}
	return http.StatusOK, a.nodeOut(r.Context(), got), nil
}
