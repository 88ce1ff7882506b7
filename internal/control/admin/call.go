package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
)

// Caller performs admin API requests in-process, for a front end that has
// authenticated the person itself (the web console): each call goes
// through the same routes, validation, store calls and notifications as a
// request over HTTP, without the bearer key check. Nothing outside the
// server's own process can reach it.
type Caller interface {
	// Call makes one request: method, a path under Prefix (with its query,
	// if any) and a body (nil, raw bytes for the policy, or a value
	// encoded as JSON). It returns the status and the response body (JSON:
	// the resource, or {"error": ...}).
	Call(ctx context.Context, method, path string, body any) (int, []byte)
}

// Call implements Caller.
func (a *api) Call(ctx context.Context, method, path string, body any) (int, []byte) {
	var b []byte
	switch v := body.(type) {
	case nil:
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			return http.StatusBadRequest, errJSON("encoding the request: " + err.Error())
		}
	}
	if !strings.HasPrefix(path, Prefix) {
		return http.StatusNotFound, errJSON("no such endpoint: " + method + " " + path)
	}
	r, err := http.NewRequestWithContext(ctx, method, path, bytes.NewReader(b))
	if err != nil {
		return http.StatusBadRequest, errJSON(err.Error())
	}
	r.RemoteAddr = "in-process"
	if a, ok := ctx.Value(actorCtxKey{}).(actorInfo); ok && a.source != "" {
		r.RemoteAddr = a.source
	}
	w := &recorder{h: http.Header{}, code: http.StatusOK}
	a.mux.ServeHTTP(w, r)
	return w.code, w.buf.Bytes()
}

type actorCtxKey struct{}

type actorInfo struct{ actor, source string }

// WithActor tells in-process calls made with ctx who is acting (for the
// audit log: "apikey:wapi_PREFIX", "user:NAME") and from where (the
// browser's address); Call gives the request that source address.
func WithActor(ctx context.Context, actor, source string) context.Context {
	return context.WithValue(ctx, actorCtxKey{}, actorInfo{actor, source})
}

// ActorFrom returns the actor WithActor put in ctx ("" if none).
func ActorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorCtxKey{}).(actorInfo)
	return a.actor
}

func errJSON(msg string) []byte {
	b, _ := json.Marshal(errBody{oneLine(msg)})
	return b
}

// recorder is the response writer of an in-process call.
type recorder struct {
	h     http.Header
	code  int
	wrote bool
	buf   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.h }

func (w *recorder) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.buf.Write(b)
}
