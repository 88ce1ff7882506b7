package localapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/warrenmesh/warren/internal/testutil/logtest"
)

// fileBackend answers a send with the bytes of the passed file.
type fileBackend struct{ backend }

func (b *fileBackend) FileHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /localapi/v1/file/send", func(w http.ResponseWriter, r *http.Request) {
		f := ReceivedFile(r)
		if f == nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(FileError{Msg: "no file descriptor came with the request"})
			return
		}
		defer f.Close()
		data, err := io.ReadAll(f)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(FileError{Msg: err.Error()})
			return
		}
		if ReceivedFile(r) != nil {
			t := "a second descriptor was handed out"
			json.NewEncoder(w).Encode(FileSendEvent{Err: t})
			return
		}
		enc := json.NewEncoder(w)
		enc.Encode(FileSendEvent{Start: &FileOffset{Peer: "p"}})
		enc.Encode(FileSendEvent{Sent: int64(len(data)), Done: &WaitingFile{Name: string(data), Size: int64(len(data))}})
	})
	return mux
}

// TestFileDescriptorPassing: the descriptor the client passes with a send
// reaches the handler, once; a request without one gets none.
func TestFileDescriptorPassing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	l, gid, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	go Serve(l, &fileBackend{backend{st: Status{Peers: []PeerStatus{}}}}, gid, logtest.T(t))
	t.Cleanup(func() { l.Close() })

	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte("the passed file"), 0o600)
	c := NewClient(path)
	for range 3 { // each request carries its own
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		var events []FileSendEvent
		wf, err := c.FileSend(context.Background(), FileSendRequest{Peer: "p", Name: "n"}, f, func(ev FileSendEvent) { events = append(events, ev) })
		f.Close()
		if err != nil || wf.Name != "the passed file" {
			t.Fatalf("send: %+v, %v", wf, err)
		}
		if len(events) != 2 || events[0].Start == nil || events[1].Sent != 15 {
			t.Fatalf("events %+v", events)
		}
	}
	// A plain request (no descriptor) on the same endpoint.
	resp, err := c.hc.Post("http://warrend/localapi/v1/file/send", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = answerError(resp)
	resp.Body.Close()
	if err == nil || err.Error() != "no file descriptor came with the request" {
		t.Fatalf("without a descriptor: %v", err)
	}
}
