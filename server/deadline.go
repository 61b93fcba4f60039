package server

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// boundRequest bounds, per request, how long reading its body (body) and
// handling it and writing its answer (write) may take, both from when its
// headers are read; zero is no bound.
//
// http.Server.ReadTimeout is not used: it is a deadline on the
// connection's read side from the request's first byte, and whether a
// hijacked WebSocket (/v1/subscribe) escapes it depends on net/http's
// internals. Here the read deadline is set only on a request that has a
// body, and lifted as soon as the body has been read to its end; a
// bodiless request, a WebSocket upgrade among them, never gets one.
func boundRequest(h http.Handler, body, write time.Duration) http.Handler {
	if body <= 0 && write <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		if write > 0 && !isUpgrade(r) {
			rc.SetWriteDeadline(now.Add(write))
		}
		if body > 0 && r.Body != nil && r.Body != http.NoBody {
			if err := rc.SetReadDeadline(now.Add(body)); err == nil {
				r.Body = &timedBody{ReadCloser: r.Body, rc: rc, w: w}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// isUpgrade reports a bodiless GET asking to switch protocols (a
// WebSocket): its connection outlives the request, so no write deadline.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && (r.Body == nil || r.Body == http.NoBody) &&
		r.Header.Get("Upgrade") != "" && headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// timedBody is a request body under a read deadline. Read to its end, it
// lifts the deadline (the connection's background read, which notices a
// client going away, must wait as long as the handler runs); a read that
// fails — the deadline passed — marks the connection to be closed after
// the answer rather than reused with half a body in it.
type timedBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	w    http.ResponseWriter
	once sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(func() {
			if err == io.EOF {
				b.rc.SetReadDeadline(time.Time{})
			} else {
				b.w.Header().Set("Connection", "close")
			}
		})
	}
	return n, err
}
