package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"time"
)

// FileBackend is implemented by a Backend that does file drop; Handler
// then serves its FileHandler under /localapi/v1/file/:
//
//	POST   /localapi/v1/file/send   FileSendRequest, with the open file passed
//	                                (SCM_RIGHTS, see ReceivedFile) → FileSendEvent lines
//	GET    /localapi/v1/file/list                     → FileList
//	GET    /localapi/v1/file/files/NAME               → the file's bytes
//	DELETE /localapi/v1/file/files/NAME               → {}
//
// Errors are {"error": "...", "retry": bool}; retry marks failures that
// asking again (sending again, which resumes) may overcome, such as a
// broken path.
//
// A send is one request: the daemon reads the file from the descriptor
// the CLI opened and passed, asks the peer for its offset, answers 200
// with a first FileSendEvent (Start), then one with the bytes sent so far
// every 200 ms, and a last one with Done or Err.
type FileBackend interface {
	FileHandler() http.Handler
}

// FileSendRequest names the peer to send the passed file to, and its name.
type FileSendRequest struct {
	Peer string `json:"peer"` // name, DNS name or tunnel address
	Name string `json:"name"` // as sanitised by the sender
}

// FileOffset is how much of a file the peer already holds.
type FileOffset struct {
	Offset int64      `json:"offset"`
	Peer   string     `json:"peer"` // the peer's name
	Addr   netip.Addr `json:"addr"`
}

// FileSendEvent is one line of a send's answer.
type FileSendEvent struct {
	Start *FileOffset  `json:"start,omitempty"` // first line: where the send starts
	Sent  int64        `json:"sent,omitempty"`  // file bytes sent so far by this request
	Done  *WaitingFile `json:"done,omitempty"`  // last line: the file as the peer stored it
	Err   string       `json:"err,omitempty"`   // last line: the send failed
	Retry bool         `json:"retry,omitempty"` // with Err: sending again may succeed
}

// WaitingFile is a received file waiting in the inbox.
type WaitingFile struct {
	Name     string    `json:"name"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256,omitempty"`
	From     string    `json:"from,omitempty"` // sending node
	FromUser string    `json:"fromUser,omitempty"`
	Received time.Time `json:"received"`
}

// FileList is the inbox.
type FileList struct {
	Files []WaitingFile `json:"files"`
	// ReceivedBytes counts the file bytes peers wrote into the inbox
	// since the daemon started (resumed transfers add only what they sent).
	ReceivedBytes int64 `json:"receivedBytes"`
}

// FileError is a file drop failure; Retry marks those worth retrying.
type FileError struct {
	Msg   string `json:"error"`
	Retry bool   `json:"retry,omitempty"`
}

func (e *FileError) Error() string { return e.Msg }

// IsRetryable reports whether err is a file drop failure worth retrying.
func IsRetryable(err error) bool {
	var fe *FileError
	return errors.As(err, &fe) && fe.Retry
}

func (c *Client) fileDo(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return req.Context().Err()
		}
		return c.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("warren daemon: bad answer: %w", err)
	}
	return nil
}

// FileSend has the daemon send the open file f (which it reads through
// the descriptor passed along with the request) to a peer, resuming where
// the peer's partial copy stops; event sees each FileSendEvent but a
// failure.
func (c *Client) FileSend(ctx context.Context, r FileSendRequest, f *os.File, event func(FileSendEvent)) (*WaitingFile, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	rc.Control(func(p uintptr) { fd = int(p) })
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", c.Socket)
			if err != nil {
				return nil, err
			}
			return &fdSendConn{UnixConn: conn.(*net.UnixConn), fd: fd}, nil
		},
		DisableKeepAlives: true,
	}}
	defer runtime.KeepAlive(f)
	b, _ := json.Marshal(r)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://warrend/localapi/v1/file/send", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, answerError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev FileSendEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("warren daemon: bad answer: %w", err)
		}
		if ev.Err == "" {
			event(ev)
		}
		switch {
		case ev.Done != nil:
			return ev.Done, nil
		case ev.Err != "":
			return nil, &FileError{Msg: ev.Err, Retry: ev.Retry}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, &FileError{Msg: "the daemon ended the send without a result", Retry: true}
}

// FileList lists the files waiting in the inbox.
func (c *Client) FileList(ctx context.Context) (*FileList, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://warrend/localapi/v1/file/list", nil)
	if err != nil {
		return nil, err
	}
	var l FileList
	if err := c.fileDo(req, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// FileOpen returns a waiting file's bytes; close it when done.
func (c *Client) FileOpen(ctx context.Context, name string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://warrend/localapi/v1/file/files/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var fe FileError
		if json.NewDecoder(io.LimitReader(resp.Body, maxRequest)).Decode(&fe) == nil && fe.Msg != "" {
			return nil, &fe
		}
		return nil, fmt.Errorf("warren daemon: HTTP %s", resp.Status)
	}
	return resp.Body, nil
}

// FileDelete removes a waiting file from the inbox.
func (c *Client) FileDelete(ctx context.Context, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://warrend/localapi/v1/file/files/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	return c.fileDo(req, nil)
}

// answerError reads the error of a file drop answer other than 200.
func answerError(resp *http.Response) error {
	var fe FileError
	if json.NewDecoder(io.LimitReader(resp.Body, maxRequest)).Decode(&fe) != nil || fe.Msg == "" {
		if resp.StatusCode == http.StatusNotFound {
			return errors.New("this daemon does not do this file drop request (too old? restart it)")
		}
		return fmt.Errorf("warren daemon: HTTP %s", resp.Status)
	}
	return &fe
}
