package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/console"
)

// The live stream: refused without a session; with one, an event with
// every node at once and another when a node goes offline.
func TestEventsStream(t *testing.T) {
	e := newEnv(t, console.Options{})
	n := e.join("laptop")
	b := e.browser()
	if resp, _ := b.do("GET", "/admin/events", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a session: %d", resp.StatusCode)
	}
	b.signIn(e.apiKey)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.hs.URL+"/admin/events", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	// next returns the laptop's state in the next nodes event.
	next := func() (online, present bool) {
		t.Helper()
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var nodes []struct {
				ID     int64 `json:"id"`
				Online bool  `json:"online"`
			}
			if err := json.Unmarshal([]byte(data), &nodes); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			for _, x := range nodes {
				if x.ID == n.id {
					return x.Online, true
				}
			}
			return false, false
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return false, false
	}
	online, present := next()
	for present && !online { // the first event may predate the stream taking over
		online, present = next()
	}
	if !present {
		t.Fatal("laptop not in the event")
	}
	n.stop()
	for online, present = next(); present && online; online, present = next() {
	}
	if !present {
		t.Fatal("laptop gone from the events")
	}
}
