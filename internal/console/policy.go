package console

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// policyData is the policy editor: the text, and after a refused check or
// save each problem with its place, and the lines around the first place.
type policyData struct {
	Text     string
	Version  int64
	Updated  string
	Problems []problem
	Excerpt  []excerptLine
	Line     int // the first problem's line (0: none), where console.js puts the cursor
	Column   int
}

type problem struct {
	Line, Column int
	Msg          string
}

type excerptLine struct {
	N     int
	Text  string
	Mark  bool   // the line of the first problem
	Caret string // under a marked line: spaces up to the column, then ^
}

func (c *Console) policyPage(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	p := c.newPage(tok, ss, "Access policy", "policy")
	var pol admin.Policy
	if err := c.call(r.Context(), http.MethodGet, "/api/v1/policy", nil, &pol); err != nil {
		p.Error = err.Error()
	}
	p.Data = policyData{Text: pol.Policy, Version: pol.Version, Updated: when(pol.Updated)}
	c.render(w, http.StatusOK, "policy", p)
}

// policySave checks the posted policy, or sets it: the admin API parses
// it, validates it and runs its tests first (package policy), and a
// refusal comes back to the editor with the text kept and each problem at
// its line and column.
func (c *Console) policySave(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	text := strings.ReplaceAll(r.PostFormValue("policy"), "\r\n", "\n") // a textarea posts CRLF
	op := r.PostFormValue("op")
	var err error
	var msg string
	switch {
	case op == "check":
		var chk admin.PolicyCheck
		if err = c.call(r.Context(), http.MethodPost, "/api/v1/policy/check", []byte(text), &chk); err == nil {
			msg = fmt.Sprintf("The policy is valid and its %d tests pass (not saved yet).", chk.Tests)
		}
	case op == "save" && strings.TrimSpace(text) == "":
		err = c.call(r.Context(), http.MethodDelete, "/api/v1/policy", nil, nil)
		msg = "Policy removed: every node may reach every other."
	case op == "save":
		var pol admin.Policy
		if err = c.call(r.Context(), http.MethodPut, "/api/v1/policy", []byte(text), &pol); err == nil {
			msg = fmt.Sprintf("Policy saved (version %d): its tests passed.", pol.Version)
		}
	default:
		err = fmt.Errorf("op %q: want check or save", op)
	}
	p := c.newPage(tok, ss, "Access policy", "policy")
	d := policyData{Text: text}
	var ae *apiError
	switch {
	case err == nil && op == "save":
		c.after(w, r, tok, Prefix+"policy", msg, nil)
		return
	case err == nil:
		p.Flash = msg
	case errors.As(err, &ae) && len(ae.problems) > 0:
		p.Error = ae.msg
		d.Problems = parseProblems(ae.problems)
		d.Line, d.Column, d.Excerpt = excerpt(text, d.Problems)
	default:
		p.Error = err.Error()
	}
	if cur := new(admin.Policy); c.call(r.Context(), http.MethodGet, "/api/v1/policy", nil, cur) == nil {
		d.Version, d.Updated = cur.Version, when(cur.Updated)
	}
	p.Data = d
	code := http.StatusOK
	if p.Error != "" {
		code = http.StatusUnprocessableEntity
	}
	c.render(w, code, "policy", p)
}

// parseProblems reads the API's "line L, column C: message" problems.
func parseProblems(lines []string) []problem {
	out := make([]problem, 0, len(lines))
	for _, s := range lines {
		var p problem
		if _, err := fmt.Sscanf(s, "line %d, column %d:", &p.Line, &p.Column); err == nil {
			_, p.Msg, _ = strings.Cut(s, ": ")
		} else {
			p = problem{Msg: s}
		}
		out = append(out, p)
	}
	return out
}

// excerpt returns the first problem's place and the lines around it.
func excerpt(text string, ps []problem) (line, col int, out []excerptLine) {
	for _, p := range ps {
		if p.Line > 0 {
			line, col = p.Line, p.Column
			break
		}
	}
	if line == 0 {
		return 0, 0, nil
	}
	lines := strings.Split(text, "\n")
	for n := max(1, line-2); n <= min(len(lines), line+2); n++ {
		l := excerptLine{N: n, Text: lines[n-1], Mark: n == line}
		if l.Mark && col > 0 {
			l.Caret = strings.Repeat(" ", min(col-1, len(l.Text))) + "^"
		}
		out = append(out, l)
	}
	return line, col, out
}
