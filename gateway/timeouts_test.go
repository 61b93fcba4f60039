package gateway_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/server"
)

// serveWithBounds serves e's gateway through a server.Process with
// request bounds of d (body, header and idle timeouts; 3d to handle and
// write an answer) and points e at it.
func serveWithBounds(t *testing.T, e *env, d time.Duration) {
	t.Helper()
	p := server.New(nil, slog.New(slog.DiscardHandler), nil, server.Config{BodyTimeout: d, WriteTimeout: 3 * d, ReadHeaderTimeout: d, IdleTimeout: d})
	addr, err := p.ServeHTTP("127.0.0.1:0", e.gw.Handler())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	e.url = "http://" + addr.String()
}

// TestSubscriptionOutlivesRequestTimeouts: a WebSocket subscription at
// /v1/subscribe served by a Process whose body, write, header and idle
// timeouts are short stays up well past all of them and still delivers
// deltas.
func TestSubscriptionOutlivesRequestTimeouts(t *testing.T) {
	const bound = 200 * time.Millisecond
	e := newEnv(t, nil)
	e.backend.deltas = make(chan string, 4)
	serveWithBounds(t, e, bound)
	c, ctx := dialWS(t, e)

	write(t, ctx, c, frame{"type": "subscribe", "id": "s1", "function": "messages:list", "args": frame{"room_id": "r1"}})
	if f := read(t, ctx, c); f["type"] != "data" {
		t.Fatalf("first frame = %v, want data", f)
	}
	if f := read(t, ctx, c); f["type"] != "settled" {
		t.Fatalf("second frame = %v, want settled", f)
	}
	// Quiet for five times every bound: a deliberate wait, since the
	// property under test is that time passing does not end the socket.
	time.Sleep(5 * bound)
	e.backend.deltas <- "after the timeouts"
	d := read(t, ctx, c)
	if d["type"] != "delta" {
		t.Fatalf("frame after the timeouts = %v, want a delta", d)
	}
	write(t, ctx, c, frame{"type": "ping"})
	if f := read(t, ctx, c); f["type"] != "pong" {
		t.Fatalf("answer to ping = %v, want pong", f)
	}
}

// TestDribbledCallBody: a /v1/call whose body arrives slower than the body
// timeout is answered 400 INVALID_ARGUMENT naming the time limit, and its
// connection closed.
func TestDribbledCallBody(t *testing.T) {
	const bound = 300 * time.Millisecond
	e := newEnv(t, nil)
	serveWithBounds(t, e, bound)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"function":"messages:list","args":{"room_id":"r1"}}`
	io.WriteString(c, "POST /v1/call HTTP/1.1\r\nHost: lunora\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n"+body[:10])
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 10; i < len(body)-1; i++ { // never the last byte
			select {
			case <-stop:
				return
			case <-time.After(bound / 10):
			}
			if _, err := io.WriteString(c, body[i:i+1]); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * bound))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to the dribbled body: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), `"INVALID_ARGUMENT"`) || !strings.Contains(string(raw), "time limit") || !resp.Close {
		t.Fatalf("answer = %d %s (close %v), want 400 INVALID_ARGUMENT about the time limit, closing", resp.StatusCode, raw, resp.Close)
	}
}
