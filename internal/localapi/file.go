package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// FileBackend is implemented by a Backend that does file drop; Handler
// then serves its FileHandler under /localapi/v1/file/:
//
//	POST   /localapi/v1/file/offset FileOffsetRequest → FileOffset
//	PUT    /localapi/v1/file/put?peer=&name=&size=&sha256=&offset=  body → WaitingFile
//	GET    /localapi/v1/file/list                     → FileList
//	GET    /localapi/v1/file/files/NAME               → the file's bytes
//	DELETE /localapi/v1/file/files/NAME               → {}
//
// Errors are {"error": "...", "retry": bool}; retry marks failures that
// asking again (for the offset) may overcome, such as a broken path.
type FileBackend interface {
	FileHandler() http.Handler
}

// FileOffsetRequest names a file to send to a peer.
type FileOffsetRequest struct {
	Peer   string `json:"peer"` // name, DNS name or tunnel address
	Name   string `json:"name"` // as sanitised by the sender
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// FileOffset is how much of a file the peer already holds.
type FileOffset struct {
	Offset int64      `json:"offset"`
	Peer   string     `json:"peer"` // the peer's name
	Addr   netip.Addr `json:"addr"`
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
		var fe FileError
		if json.NewDecoder(io.LimitReader(resp.Body, maxRequest)).Decode(&fe) != nil || fe.Msg == "" {
			if resp.StatusCode == http.StatusNotFound {
				return errors.New("this daemon does not do file drop (too old?)")
			}
			return fmt.Errorf("warren daemon: HTTP %s", resp.Status)
		}
		return &fe
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("warren daemon: bad answer: %w", err)
	}
	return nil
}

// FileOffset asks the peer how much of the file it already holds.
func (c *Client) FileOffset(ctx context.Context, r FileOffsetRequest) (*FileOffset, error) {
	b, _ := json.Marshal(r)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://warrend/localapi/v1/file/offset", bytesReader(b))
	if err != nil {
		return nil, err
	}
	var o FileOffset
	if err := c.fileDo(req, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// FilePut streams the file's bytes from off (exactly r.Size-off of them,
// read from body) through the daemon to the peer.
func (c *Client) FilePut(ctx context.Context, r FileOffsetRequest, off int64, body io.Reader) (*WaitingFile, error) {
	q := url.Values{"peer": {r.Peer}, "name": {r.Name}, "size": {strconv.FormatInt(r.Size, 10)},
		"sha256": {r.SHA256}, "offset": {strconv.FormatInt(off, 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://warrend/localapi/v1/file/put?"+q.Encode(), io.NopCloser(body))
	if err != nil {
		return nil, err
	}
	req.ContentLength = r.Size - off
	if req.ContentLength == 0 {
		req.Body = http.NoBody
	}
	var f WaitingFile
	if err := c.fileDo(req, &f); err != nil {
		return nil, err
	}
	return &f, nil
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

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
