package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/lunora/lunora/gateway"
)

type frame map[string]any

func dialWS(t *testing.T, e *env) (*websocket.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/v1/subscribe", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, ctx
}

func write(t *testing.T, ctx context.Context, c *websocket.Conn, f frame) {
	t.Helper()
	if err := wsjson.Write(ctx, c, f); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, ctx context.Context, c *websocket.Conn) frame {
	t.Helper()
	var f frame
	if err := wsjson.Read(ctx, c, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWebSocketSubscribe(t *testing.T) {
	e := newEnv(t, nil)
	e.backend.deltas = make(chan string, 4)
	c, ctx := dialWS(t, e)

	write(t, ctx, c, frame{"type": "subscribe", "id": "s1", "function": "messages:list", "args": frame{"room_id": "r1"}})
	data := read(t, ctx, c)
	if data["type"] != "data" || data["id"] != "s1" || data["seq"] != 1.0 || data["shard_id"] != "room_id=r1" || data["keyed"] != true {
		t.Fatalf("data frame = %v", data)
	}
	if f := read(t, ctx, c); f["type"] != "settled" || f["seq"] != 1.0 {
		t.Fatalf("settled frame = %v", f)
	}
	e.backend.deltas <- "second"
	d := read(t, ctx, c)
	ch := d["changes"].([]any)[0].(map[string]any)
	if d["type"] != "delta" || d["seq"] != 2.0 || ch["op"] != "insert" || ch["row"].([]any)[1] != "second" {
		t.Fatalf("delta frame = %v", d)
	}

	// Bad subscriptions get an error frame; the socket stays open.
	for _, tc := range []struct {
		f    frame
		code string
	}{
		{frame{"type": "subscribe", "id": "m", "function": "messages:send", "args": frame{"room_id": "r1", "author": "a", "body": "b"}}, "INVALID_ARGUMENT"},
		{frame{"type": "subscribe", "id": "u", "function": "nope:nope"}, "NOT_FOUND"},
		{frame{"type": "subscribe", "id": "a", "function": "messages:list", "args": frame{"room_id": "r1", "limit": "ten"}}, "INVALID_ARGUMENT"},
		{frame{"type": "subscribe", "id": "s1", "function": "messages:list", "args": frame{"room_id": "r1"}}, "ALREADY_EXISTS"},
		{frame{"type": "subscribe", "id": "g", "function": "users:get", "args": frame{"user_id": "x"}}, "UNIMPLEMENTED"},
		{frame{"type": "unsubscribe", "id": "never"}, "NOT_FOUND"},
		{frame{"type": "launch"}, "INVALID_ARGUMENT"},
	} {
		write(t, ctx, c, tc.f)
		f := read(t, ctx, c)
		if f["type"] != "error" || f["code"] != tc.code {
			t.Fatalf("%v: got %v, want error %s", tc.f, f, tc.code)
		}
	}
	write(t, ctx, c, frame{"type": "ping"})
	if f := read(t, ctx, c); f["type"] != "pong" {
		t.Fatalf("ping answered %v", f)
	}
	write(t, ctx, c, frame{"type": "unsubscribe", "id": "s1"})
	write(t, ctx, c, frame{"type": "ping"})
	if f := read(t, ctx, c); f["type"] != "pong" {
		t.Fatalf("after unsubscribe: %v", f)
	}
}

func TestWebSocketLimits(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.MaxSubscriptionsPerConn = 2; c.MaxFrameBytes = 1024 })
	e.backend.deltas = make(chan string)
	c, ctx := dialWS(t, e)
	for _, id := range []string{"a", "b"} {
		write(t, ctx, c, frame{"type": "subscribe", "id": id, "function": "messages:list", "args": frame{"room_id": id}})
		if f := read(t, ctx, c); f["type"] != "data" {
			t.Fatalf("subscription %s: %v", id, f)
		}
		read(t, ctx, c) // settled
	}
	write(t, ctx, c, frame{"type": "subscribe", "id": "c", "function": "messages:list", "args": frame{"room_id": "c"}})
	if f := read(t, ctx, c); f["type"] != "error" || f["code"] != "RESOURCE_EXHAUSTED" {
		t.Fatalf("third subscription: %v", f)
	}
	// A frame over the limit closes the socket with 1009.
	write(t, ctx, c, frame{"type": "ping", "pad": strings.Repeat("x", 2048)})
	var f frame
	err := wsjson.Read(ctx, c, &f)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("oversized frame: got %v (%v), want close 1009", err, f)
	}
}
