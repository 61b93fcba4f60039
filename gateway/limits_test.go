package gateway_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
)

const sendBody = `{"function": "messages:send", "args": {"room_id": "r1", "author": "ann", "body": "hi"}}`

// serve runs one request through h as if from remoteAddr (and with id as
// its authenticated identity when not nil).
func serve(h http.Handler, remoteAddr string, id *auth.Identity, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = remoteAddr
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	if id != nil {
		r = r.WithContext(auth.NewContext(r.Context(), id))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestRateLimitPerClient(t *testing.T) {
	// A bucket of 3 refilled once per 1000 s: nothing refills during the
	// test.
	e := newEnv(t, func(c *gateway.Config) { c.RateLimit, c.RateBurst = 0.001, 3 })
	h := e.gw.Handler()
	for i := 0; i < 3; i++ {
		if w := serve(h, "10.0.0.1:5000", nil, "POST", "/v1/call", sendBody, nil); w.Code != 200 {
			t.Fatalf("request %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	w := serve(h, "10.0.0.1:5001", nil, "POST", "/v1/call", sendBody, nil)
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), `"RESOURCE_EXHAUSTED"`) || !strings.Contains(w.Body.String(), "rate limit") {
		t.Fatalf("4th request from the same IP (another port): %d %s", w.Code, w.Body)
	}
	ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || ra < 900 || ra > 1000 {
		t.Errorf("Retry-After %q, want the ~1000 s until the next token", w.Header().Get("Retry-After"))
	}
	// Another address, and an authenticated identity even from the
	// limited address, have their own buckets.
	if w := serve(h, "10.0.0.2:5000", nil, "POST", "/v1/call", sendBody, nil); w.Code != 200 {
		t.Errorf("another client: %d %s", w.Code, w.Body)
	}
	ann := &auth.Identity{Method: auth.MethodJWT, Role: auth.RoleService, Subject: "ann"}
	for i := 0; i < 3; i++ {
		if w := serve(h, "10.0.0.1:5000", ann, "POST", "/v1/call", sendBody, nil); w.Code != 200 {
			t.Fatalf("identity ann, request %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	// ann is one client from any address.
	if w := serve(h, "10.9.9.9:1", ann, "POST", "/v1/sql", `{"sql": "SELECT 1"}`, nil); w.Code != http.StatusTooManyRequests {
		t.Errorf("identity ann from another address: %d %s", w.Code, w.Body)
	}
	if n := limited(t, e, "rate"); n != 2 {
		t.Errorf("lunora_gateway_limited_total{limit=rate} = %v, want 2", n)
	}
	if n := e.backend.count(); n != 7 {
		t.Errorf("backend saw %d calls, want the 7 admitted", n)
	}
}

// limited reads lunora_gateway_limited_total{limit} from e's registry.
func limited(t *testing.T, e *env, limit string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lunora_gateway_limited_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestConcurrentRequestsPerClient(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.MaxConcurrentPerClient = 2 })
	release := make(chan struct{})
	e.backend.setAnswer(func(ctx context.Context, c backendCall) (*api.Result, error) {
		select {
		case <-release:
			return &api.Result{ShardID: c.ShardID}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	h := e.gw.Handler()
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- serve(h, "10.0.0.1:1", nil, "POST", "/v1/call", sendBody, nil).Code
		}()
	}
	waitFor(t, "two calls held by the backend", func() bool { return e.backend.count() == 2 })
	w := serve(h, "10.0.0.1:2", nil, "POST", "/v1/call", sendBody, nil)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), "2 requests in flight") {
		t.Fatalf("third concurrent request: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	// Another client is not affected.
	done := make(chan int, 1)
	go func() { done <- serve(h, "10.0.0.2:1", nil, "POST", "/v1/call", sendBody, nil).Code }()
	waitFor(t, "the other client's call at the backend", func() bool { return e.backend.count() == 3 })
	close(release)
	wg.Wait()
	for i := 0; i < 2; i++ {
		if c := <-codes; c != 200 {
			t.Errorf("held call answered %d", c)
		}
	}
	if c := <-done; c != 200 {
		t.Errorf("other client's call answered %d", c)
	}
	// The slots are back.
	if w := serve(h, "10.0.0.1:3", nil, "POST", "/v1/call", sendBody, nil); w.Code != 200 {
		t.Errorf("after the held calls ended: %d %s", w.Code, w.Body)
	}
	if n := limited(t, e, "concurrency"); n != 1 {
		t.Errorf("limited{concurrency} = %v, want 1", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebSocketsPerClient(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.MaxWebSocketsPerClient = 1 })
	ws := "ws" + strings.TrimPrefix(e.url, "http") + "/v1/subscribe"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c1, _, err := websocket.Dial(ctx, ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.CloseNow()
	_, resp, err := websocket.Dial(ctx, ws, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("second WebSocket from the same client: err %v, status %d", err, status)
	}
	// HTTP calls are not WebSockets: still served.
	if a := e.do(t, "POST", "/v1/call", sendBody); a.status != 200 {
		t.Errorf("call while the socket is open: %d %s", a.status, a.raw)
	}
	c1.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the slot to come back", func() bool {
		c, _, err := websocket.Dial(ctx, ws, nil)
		if err != nil {
			return false
		}
		c.CloseNow()
		return true
	})
	if n := limited(t, e, "websockets"); n < 1 {
		t.Errorf("limited{websockets} = %v", n)
	}
}

func TestSubscribeFramesAreRateLimited(t *testing.T) {
	// Burst 2: the upgrade takes one token, the first subscribe the other.
	e := newEnv(t, func(c *gateway.Config) { c.RateLimit, c.RateBurst = 0.001, 2 })
	c, ctx := dialWS(t, e)
	write(t, ctx, c, frame{"type": "subscribe", "id": "s1", "function": "messages:list", "args": frame{"room_id": "r1"}})
	if f := read(t, ctx, c); f["type"] != "data" {
		t.Fatalf("first subscribe: %v", f)
	}
	read(t, ctx, c) // settled
	write(t, ctx, c, frame{"type": "subscribe", "id": "s2", "function": "messages:list", "args": frame{"room_id": "r2"}})
	f := read(t, ctx, c)
	if f["type"] != "error" || f["id"] != "s2" || f["code"] != "RESOURCE_EXHAUSTED" || f["retry_after_ms"] == nil {
		t.Fatalf("second subscribe over the rate: %v", f)
	}
	// The socket stays open.
	write(t, ctx, c, frame{"type": "ping"})
	if f := read(t, ctx, c); f["type"] != "pong" {
		t.Fatalf("ping after the refusal: %v", f)
	}
}

func grpcPeer(addr string) context.Context {
	a, _ := net.ResolveTCPAddr("tcp", addr)
	return peer.NewContext(context.Background(), &peer.Peer{Addr: a})
}

func TestGRPCPathIsLimited(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) {
		c.RateLimit, c.RateBurst = 0.001, 2
		c.MaxWebSocketsPerClient = 1
	})
	ctx := grpcPeer("10.1.0.1:4000")
	args := map[string]any{"room_id": "r1", "author": "ann", "body": "hi"}
	for i := 0; i < 2; i++ {
		if _, err := e.gw.Call(ctx, "messages:send", args, "", api.ReadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.gw.Sql(ctx, "room_id=r1", "SELECT 1", nil, api.ReadOptions{})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != codes.ResourceExhausted || ae.RetryAfter < 900*time.Second || !errors.Is(err, gateway.ErrRateLimited) {
		t.Fatalf("third gRPC call: %v", err)
	}
	for _, f := range []func(context.Context) error{
		func(ctx context.Context) error { _, err := e.gw.Status(ctx); return err },
		func(ctx context.Context) error {
			_, err := e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: []string{"r1"}})
			return err
		},
	} {
		if err := f(ctx); !errors.Is(err, gateway.ErrRateLimited) {
			t.Errorf("Status/FanOut over the rate: %v", err)
		}
	}

	// A subscription stream holds a live-connection slot until closed.
	other := grpcPeer("10.1.0.2:4000")
	st, err := e.gw.Subscribe(other, "messages:list", map[string]any{"room_id": "r1"}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.gw.Subscribe(other, "messages:list", map[string]any{"room_id": "r2"}, "", 0); !errors.Is(err, gateway.ErrTooManySockets) {
		t.Fatalf("second stream: %v", err)
	}
	st.Close()
	st, err = e.gw.Subscribe(other, "messages:list", map[string]any{"room_id": "r2"}, "", 0)
	if err != nil {
		t.Fatalf("stream after the first closed: %v", err)
	}
	st.Close()
}

func TestClientKey(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		ctx  context.Context
		addr string
		want string
	}{
		{ctx, "192.0.2.7:443", "ip:192.0.2.7"},
		{ctx, "[::ffff:192.0.2.7]:443", "ip:192.0.2.7"},
		{ctx, "[2001:db8:1:2:aaaa::1]:443", "ip:2001:db8:1:2::/64"},
		{ctx, "[2001:db8:1:2:bbbb::9]:1", "ip:2001:db8:1:2::/64"},
		{ctx, "@", "ip:@"},
		{auth.NewContext(ctx, &auth.Identity{Method: auth.MethodAPIKey, Subject: "k1"}), "192.0.2.7:1", "api_key:k1"},
		{auth.NewContext(ctx, &auth.Identity{Method: auth.MethodDev}), "192.0.2.7:1", "ip:192.0.2.7"},
	} {
		if got := gateway.ClientKey(tc.ctx, tc.addr); got != tc.want {
			t.Errorf("ClientKey(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestLimitsConfigRefused(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	for name, tweak := range map[string]func(*gateway.Config){
		"negative rate":        func(c *gateway.Config) { c.RateLimit = -1 },
		"negative concurrency": func(c *gateway.Config) { c.MaxConcurrentPerClient = -1 },
		"bad origin":           func(c *gateway.Config) { c.CORSOrigins = []string{"example.com"} },
		"star and more":        func(c *gateway.Config) { c.CORSOrigins = []string{"*", "https://a.example"} },
		"too few statements":   func(c *gateway.Config) { c.SchemaLimits.MaxStatements = 2 },
	} {
		cfg := gateway.DefaultConfig()
		cfg.App, cfg.Backend = app, &fakeBackend{}
		tweak(&cfg)
		if _, err := gateway.New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestAdminSQLBoundsAtTheGateway(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.SchemaLimits.MaxSQLLen, c.SchemaLimits.MaxParams = 300, 4 })
	long := "SELECT '" + strings.Repeat("x", 300) + "'"
	a := e.do(t, "POST", "/v1/sql", `{"shard_id": "room_id=r1", "sql": "`+long+`"}`)
	if code, msg := a.errorOf(t); a.status != 400 || code != "INVALID_ARGUMENT" || !strings.Contains(msg, "over the limit of 300") {
		t.Errorf("long SQL: %d %s", a.status, a.raw)
	}
	a = e.do(t, "POST", "/v1/sql", `{"shard_id": "room_id=r1", "sql": "SELECT :a, :b, :c, :d, :e", "params": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}}`)
	if code, msg := a.errorOf(t); a.status != 400 || code != "INVALID_ARGUMENT" || !strings.Contains(msg, "5 entries, over the limit of 4") {
		t.Errorf("5 params: %d %s", a.status, a.raw)
	}
	if e.backend.count() != 0 {
		t.Errorf("the backend saw %d statements", e.backend.count())
	}
	if a := e.do(t, "POST", "/v1/sql", `{"shard_id": "room_id=r1", "sql": "SELECT :a, :b, :c, :d", "params": {"a": 1, "b": 2, "c": 3, "d": 4}}`); a.status != 200 {
		t.Errorf("within the bounds: %d %s", a.status, a.raw)
	}
}

func TestBodyBytesPerClient(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.BodyBytesPerSecond, c.MaxBodyBytes = 1, 2000 })
	h := e.gw.Handler()
	body := `{"function": "messages:send", "args": {"room_id": "r1", "author": "ann", "body": "` + strings.Repeat("x", 1400) + `"}}`
	for i := 0; i < 2; i++ { // 2000 in the bucket: both admitted, the second into debt
		if w := serve(h, "10.0.0.1:1", nil, "POST", "/v1/call", body, nil); w.Code != 200 {
			t.Fatalf("body %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	w := serve(h, "10.0.0.1:1", nil, "POST", "/v1/call", sendBody, nil)
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "of request bodies per second") {
		t.Fatalf("in debt: %d %s", w.Code, w.Body)
	}
	if ra, _ := strconv.Atoi(w.Header().Get("Retry-After")); ra < 800 {
		t.Errorf("Retry-After %q, want the ~900 s the debt takes to pay back", w.Header().Get("Retry-After"))
	}
	// Bodies of unknown length are counted as they are read.
	chunked := func() int {
		r := httptest.NewRequest("POST", "/v1/call", strings.NewReader(body))
		r.ContentLength = -1
		r.RemoteAddr = "10.0.0.2:1"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for i := 0; i < 2; i++ {
		if c := chunked(); c != 200 {
			t.Fatalf("chunked body %d: %d", i+1, c)
		}
	}
	if c := chunked(); c != http.StatusTooManyRequests {
		t.Errorf("third chunked body: %d", c)
	}
	if n := limited(t, e, "bytes"); n != 2 {
		t.Errorf("limited{bytes} = %v, want 2", n)
	}
}
