package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/routeprefix"
)

// nodeRow is a node with its routes, as the nodes pages show it.
type nodeRow struct {
	admin.Node
	Advertised []routeRow
	Exit       routeRow // the exit routes (0.0.0.0/0 and ::/0) as one
	IsExit     bool     // advertises the exit routes
}

type routeRow struct {
	Prefix   string
	Approved bool
}

func (c *Console) nodeRows(r *http.Request) ([]nodeRow, error) {
	var ns []admin.Node
	if err := c.call(r.Context(), http.MethodGet, "/api/v1/nodes", nil, &ns); err != nil {
		return nil, err
	}
	var rs []admin.NodeRoutes
	if err := c.call(r.Context(), http.MethodGet, "/api/v1/routes", nil, &rs); err != nil {
		return nil, err
	}
	byID := map[int64]admin.NodeRoutes{}
	for _, x := range rs {
		byID[x.ID] = x
	}
	exit := map[string]bool{}
	for _, p := range routeprefix.Exit() {
		exit[p.String()] = true
	}
	out := make([]nodeRow, 0, len(ns))
	for _, n := range ns {
		row := nodeRow{Node: n}
		x := byID[n.ID]
		exitApproved := 0
		for _, p := range x.Advertised {
			if exit[p] {
				row.IsExit = true
				continue
			}
			row.Advertised = append(row.Advertised, routeRow{p, slices.Contains(x.Approved, p)})
		}
		for _, p := range x.Approved {
			if exit[p] {
				exitApproved++
			}
		}
		row.Exit = routeRow{"exit", exitApproved == len(exit)}
		out = append(out, row)
	}
	return out, nil
}

func (c *Console) nodesPage(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	p := c.newPage(tok, ss, "Nodes", "nodes")
	rows, err := c.nodeRows(r)
	if err != nil {
		p.Error = err.Error()
	}
	p.Live = c.o.World != nil
	p.Data = rows
	c.render(w, http.StatusOK, "nodes", p)
}

func (c *Console) nodePage(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	rows, err := c.nodeRows(r)
	p := c.newPage(tok, ss, "Node", "nodes")
	if err != nil {
		p.Error = err.Error()
	}
	for i := range rows {
		if rows[i].ID == id {
			p.Title = "Node " + rows[i].Name
			p.Live = c.o.World != nil
			p.Data = rows[i]
			c.render(w, http.StatusOK, "node", p)
			return
		}
	}
	c.after(w, r, tok, Prefix+"nodes", "", fmt.Errorf("node %d not found", id))
}

// nodePath is the API path of the node in the request's path.
func nodePath(r *http.Request, rest string) (string, string, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return "", "", fmt.Errorf("node ID %q is not a positive integer", r.PathValue("id"))
	}
	s := strconv.FormatInt(id, 10)
	return "/api/v1/nodes/" + s + rest, Prefix + "nodes/" + s, nil
}

// nodeAction runs one admin API request on the node of the path.
func (c *Console) nodeAction(w http.ResponseWriter, r *http.Request, tok, method, rest string, body any, msg string) {
	api, back, err := nodePath(r, rest)
	if err == nil {
		err = c.call(r.Context(), method, api, body, nil)
	}
	c.after(w, r, tok, back, msg, err)
}

func (c *Console) nodeRename(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	c.nodeAction(w, r, tok, http.MethodPatch, "", admin.NameRequest{Name: name}, "Renamed to "+name+".")
}

func (c *Console) nodeExpire(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	c.nodeAction(w, r, tok, http.MethodPost, "/expire", nil, "Node key expired: the node must sign in again.")
}

func (c *Console) nodeTags(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	tags := splitList(r.PostFormValue("tags"))
	c.nodeAction(w, r, tok, http.MethodPut, "/tags", admin.TagsRequest{Tags: tags}, "Tags set: "+strings.Join(tags, ", ")+".")
}

func (c *Console) nodeDelete(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	api, _, err := nodePath(r, "")
	if err == nil {
		err = c.call(r.Context(), http.MethodDelete, api, nil, nil)
	}
	c.after(w, r, tok, Prefix+"nodes", "Node deleted.", err)
}

// nodeRoutes approves or unapproves one route ("exit" for the exit
// routes).
func (c *Console) nodeRoutes(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	route, op := r.PostFormValue("route"), r.PostFormValue("op")
	if op != "approve" && op != "unapprove" {
		c.after(w, r, tok, Prefix+"nodes", "", fmt.Errorf("op %q: want approve or unapprove", op))
		return
	}
	c.nodeAction(w, r, tok, http.MethodPost, "/routes/"+op, admin.RoutesRequest{Routes: []string{route}}, "Route "+route+" "+op+"d.")
}

// splitList splits a comma- or space-separated form field.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// liveNode is one node in an event of the live stream.
type liveNode struct {
	ID       uint64 `json:"id"`
	Name     string `json:"name"`
	Online   bool   `json:"online"`
	LastSeen string `json:"last_seen"`
}

// eventPace is the least time between two events of a live stream.
const eventPace = 200 * time.Millisecond

// events streams the nodes' presence as server-sent events: one event
// at once and one each time the control server's world changes, read from
// the world (no store query). The stream ends with the session.
func (c *Console) events(w http.ResponseWriter, r *http.Request, tok string, ss *session) {
	if c.o.World == nil {
		http.Error(w, "no live updates here", http.StatusNotFound)
		return
	}
	ch, stop := c.o.World.WatchNodes()
	defer stop()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	end := time.NewTimer(time.Until(c.sess.deadline(ss)))
	defer end.Stop()
	beat := time.NewTicker(25 * time.Second)
	defer beat.Stop()
	send := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second)) // the listener's write timeout would cut the stream
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for {
		ns := c.o.World.Nodes()
		out := make([]liveNode, len(ns))
		for i, n := range ns {
			t := n.LastSeen
			out[i] = liveNode{ID: n.ID, Name: n.Name, Online: n.Online, LastSeen: when(&t)}
		}
		b, _ := json.Marshal(out)
		if !send([]byte("event: nodes\ndata: " + string(b) + "\n\n")) {
			return
		}
		// At most one event per eventPace: a burst of changes (every
		// node reconnecting) goes out as one event with the latest state.
		pace := time.NewTimer(eventPace)
		for waiting := true; waiting; {
			select {
			case <-ch:
				select {
				case <-pace.C:
				case <-c.done:
					return
				case <-r.Context().Done():
					return
				}
				waiting = false
			case <-beat.C:
				if !send([]byte(": keepalive\n\n")) {
					return
				}
			case <-end.C:
				return
			case <-c.done:
				return
			case <-r.Context().Done():
				return
			}
		}
	}
}
