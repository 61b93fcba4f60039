package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/schema"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type env struct {
	gw      *gateway.Gateway
	backend *fakeBackend
	reg     *prometheus.Registry
	url     string // base URL of the HTTP handler
}

func newEnv(t *testing.T, tweak func(*gateway.Config)) *env {
	t.Helper()
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	be := &fakeBackend{}
	reg := prometheus.NewRegistry()
	cfg := gateway.DefaultConfig()
	cfg.App = app
	cfg.Backend = be
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	cfg.AuthOff = true // auth_test.go tests authentication
	if tweak != nil {
		tweak(&cfg)
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &env{gw: gw, backend: be, reg: reg, url: srv.URL}
}

type httpAnswer struct {
	status int
	header http.Header
	raw    string
	body   map[string]any // numbers as json.Number
}

func (e *env) do(t *testing.T, method, path, body string) httpAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	a := httpAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&a.body); err != nil {
		t.Fatalf("%s %s: answer %q is not a JSON object: %v", method, path, raw, err)
	}
	return a
}

// errorOf returns the code and message of an error answer.
func (a httpAnswer) errorOf(t *testing.T) (string, string) {
	t.Helper()
	e, ok := a.body["error"].(map[string]any)
	if !ok {
		t.Fatalf("answer %s has no error object", a.raw)
	}
	code, _ := e["code"].(string)
	msg, _ := e["message"].(string)
	return code, msg
}

func TestHTTPCall(t *testing.T) {
	e := newEnv(t, nil)

	a := e.do(t, "POST", "/v1/call", `{"function": "messages:send", "args": {"room_id": "r1", "author": "ann", "body": "hi"}}`)
	if a.status != 200 {
		t.Fatalf("status %d: %s", a.status, a.raw)
	}
	got, _ := e.backend.last()
	want := backendCall{Method: "Call", ShardID: "room_id=r1", Name: "messages:send", Args: map[string]any{"room_id": "r1", "author": "ann", "body": "hi", "image": nil}} // image: optional, bound to NULL
	if !reflect.DeepEqual(got, want) {
		t.Errorf("backend got %+v, want %+v", got, want)
	}
	if a.body["shard_id"] != "room_id=r1" || a.body["commit_seq"] != json.Number("7") || a.body["rows_affected"] != json.Number("1") {
		t.Errorf("answer %s", a.raw)
	}

	// Integers stay exact both ways; a default fills in; shard_key names the shard.
	a = e.do(t, "POST", "/v1/call", `{"function": "messages:list", "args": {"limit": 9007199254740993}, "shard_key": "r2"}`)
	if a.status != 200 {
		t.Fatalf("status %d: %s", a.status, a.raw)
	}
	got, _ = e.backend.last()
	if got.ShardID != "room_id=r2" || got.Args["limit"] != int64(9007199254740993) || got.Args["room_id"] != "r2" {
		t.Errorf("backend got %+v", got)
	}
	if !strings.Contains(a.raw, `9007199254740993`) {
		t.Errorf("answer lost the integer: %s", a.raw)
	}
	e.do(t, "POST", "/v1/call", `{"function": "messages:list", "args": {"room_id": "r3"}}`)
	if got, _ = e.backend.last(); got.Args["limit"] != int64(50) {
		t.Errorf("default limit: backend got %+v", got)
	}

	// Every value kind as the answer encodes it.
	e.backend.setAnswer(func(ctx context.Context, c backendCall) (*api.Result, error) {
		return &api.Result{
			Columns: []string{"i", "r", "t", "b", "n", "ok"},
			Rows:    [][]any{{int64(-9007199254740993), 1.5, "x", []byte{1, 2, 3}, nil, true}},
			Seq:     18446744073709551615,
		}, nil
	})
	a = e.do(t, "POST", "/v1/call", `{"function": "settings:get", "args": {"key": "k"}}`)
	wantRaw := `{"columns":["i","r","t","b","n","ok"],"rows":[[-9007199254740993,1.5,"x","AQID",null,true]],"commit_seq":18446744073709551615,"shard_id":"__root__","rows_affected":0}` + "\n"
	if a.status != 200 || a.raw != wantRaw {
		t.Errorf("got %d %s\nwant %s", a.status, a.raw, wantRaw)
	}
}

func TestHTTPSql(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do(t, "POST", "/v1/sql", `{"shard_id": "room_id=r1", "sql": "SELECT :n, :f, :s", "params": {"n": 12345678901234567, "f": 0.25, "s": "x"}}`)
	if a.status != 200 {
		t.Fatalf("status %d: %s", a.status, a.raw)
	}
	got, _ := e.backend.last()
	want := backendCall{Method: "Exec", ShardID: "room_id=r1", Name: "SELECT :n, :f, :s", Args: map[string]any{"n": int64(12345678901234567), "f": 0.25, "s": "x"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("backend got %+v, want %+v", got, want)
	}
	if a.body["shard_id"] != "room_id=r1" {
		t.Errorf("answer %s", a.raw)
	}

	a = e.do(t, "POST", "/v1/sql", `{"sql": "SELECT * FROM settings"}`)
	if got, _ := e.backend.last(); a.status != 200 || got.ShardID != schema.RootShard {
		t.Errorf("root shard: status %d, backend got %+v", a.status, got)
	}
}

func TestHTTPStatus(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do(t, "GET", "/v1/status", "")
	want := `{"node_id":"dev","node_address":"in-process","version":"test","active_shards":3,"shards_on_disk":4,"in_flight":1,"uptime_seconds":12}` + "\n"
	if a.status != 200 || a.raw != want {
		t.Errorf("got %d %s, want %s", a.status, a.raw, want)
	}
}

func TestHTTPErrors(t *testing.T) {
	overLimit := `{"function": "messages:send", "args": {"room_id": "r1", "author": "a", "body": "` + strings.Repeat("x", 1<<20) + `"}}`
	cases := []struct {
		name    string
		method  string
		path    string
		body    string
		answer  func(context.Context, backendCall) (*api.Result, error)
		status  int
		code    string
		msgHas  string
		retry   string
		reached bool // whether the backend must have been called
	}{
		{name: "unknown function", method: "POST", path: "/v1/call", body: `{"function": "nope:x", "args": {}}`,
			status: 404, code: "NOT_FOUND", msgHas: `unknown function "nope:x"`},
		{name: "no function", method: "POST", path: "/v1/call", body: `{"args": {}}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "function must be set"},
		{name: "missing arg", method: "POST", path: "/v1/call", body: `{"function": "messages:send", "args": {"room_id": "r1", "body": "b"}}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: `missing required argument "author"`},
		{name: "mistyped arg", method: "POST", path: "/v1/call", body: `{"function": "messages:list", "args": {"room_id": "r1", "limit": "ten"}}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: `argument "limit"`},
		{name: "no shard key", method: "POST", path: "/v1/call", body: `{"function": "messages:list", "args": {}}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "room_id"},
		{name: "args not an object", method: "POST", path: "/v1/call", body: `{"function": "messages:list", "args": [1]}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "args must be a JSON object"},
		{name: "malformed JSON", method: "POST", path: "/v1/call", body: `{"function": "messages:list",`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "malformed JSON"},
		{name: "syntax error", method: "POST", path: "/v1/call", body: `{"function" "x"}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "invalid character"},
		{name: "empty body", method: "POST", path: "/v1/call", body: ``,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "empty"},
		{name: "not an object", method: "POST", path: "/v1/call", body: `[1, 2]`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "must be a JSON object"},
		{name: "mistyped field", method: "POST", path: "/v1/call", body: `{"function": 3}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: `field "function" of the request body must be a string`},
		{name: "trailing data", method: "POST", path: "/v1/call", body: `{"function": "settings:get"} {}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "exactly one JSON object"},
		{name: "unknown field", method: "POST", path: "/v1/call", body: `{"function": "settings:get", "args": {"key": "k"}, "shard": "x"}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: `unknown field "shard"`},
		{name: "body over 1 MiB", method: "POST", path: "/v1/call", body: overLimit,
			status: 413, code: "RESOURCE_EXHAUSTED", msgHas: "request body exceeds the 1 MiB limit"},
		{name: "unknown shard group", method: "POST", path: "/v1/sql", body: `{"shard_id": "user_id=u1", "sql": "SELECT 1"}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: `"user_id" is not a shard_by column`},
		{name: "empty sql", method: "POST", path: "/v1/sql", body: `{"shard_id": "room_id=r1", "sql": "  "}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "sql must not be empty"},
		{name: "nested param", method: "POST", path: "/v1/sql", body: `{"shard_id": "room_id=r1", "sql": "SELECT :p", "params": {"p": {"a": 1}}}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: `parameter "p"`},
		{name: "params not an object", method: "POST", path: "/v1/sql", body: `{"shard_id": "room_id=r1", "sql": "SELECT 1", "params": 5}`,
			status: 400, code: "INVALID_ARGUMENT", msgHas: "params must be a JSON object"},
		{name: "wrong method", method: "GET", path: "/v1/call", body: ``,
			status: 405, code: "UNIMPLEMENTED", msgHas: "use POST"},
		{name: "wrong method status", method: "POST", path: "/v1/status", body: `{}`,
			status: 405, code: "UNIMPLEMENTED", msgHas: "use GET"},
		{name: "no endpoint", method: "GET", path: "/v1/nothing", body: ``,
			status: 404, code: "NOT_FOUND", msgHas: "no endpoint"},
		{name: "backend busy", method: "POST", path: "/v1/call", body: `{"function": "messages:count", "args": {"room_id": "r1"}}`,
			answer: func(context.Context, backendCall) (*api.Result, error) {
				return nil, &api.Error{Code: codes.ResourceExhausted, Msg: "shard room_id=r1 is busy", RetryAfter: 1500 * time.Millisecond}
			},
			status: 429, code: "RESOURCE_EXHAUSTED", msgHas: "is busy", retry: "2", reached: true},
		{name: "backend sandbox refusal", method: "POST", path: "/v1/sql", body: `{"shard_id": "room_id=r1", "sql": "ATTACH 'x' AS y"}`,
			answer: func(context.Context, backendCall) (*api.Result, error) {
				return nil, api.Errorf(codes.PermissionDenied, "ATTACH is not allowed")
			},
			status: 403, code: "PERMISSION_DENIED", msgHas: "ATTACH", reached: true},
		{name: "backend assert", method: "POST", path: "/v1/call", body: `{"function": "messages:send", "args": {"room_id": "r1", "author": "a", "body": " "}}`,
			answer: func(context.Context, backendCall) (*api.Result, error) {
				return nil, api.Errorf(codes.FailedPrecondition, "a message needs a body")
			},
			status: 400, code: "FAILED_PRECONDITION", msgHas: "needs a body", reached: true},
		{name: "backend unavailable", method: "POST", path: "/v1/call", body: `{"function": "messages:count", "args": {"room_id": "r1"}}`,
			answer: func(context.Context, backendCall) (*api.Result, error) {
				return nil, api.Errorf(codes.Unavailable, "node 10.0.0.1:7000: connection refused")
			},
			status: 503, code: "UNAVAILABLE", msgHas: "10.0.0.1:7000", reached: true},
		{name: "backend uncoded error", method: "POST", path: "/v1/call", body: `{"function": "messages:count", "args": {"room_id": "r1"}}`,
			answer: func(context.Context, backendCall) (*api.Result, error) {
				return nil, errors.New("open /var/lib/lunora/secret.db: permission denied")
			},
			status: 500, code: "INTERNAL", msgHas: "internal error", reached: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.backend.setAnswer(tc.answer)
			a := e.do(t, tc.method, tc.path, tc.body)
			code, msg := a.errorOf(t)
			if a.status != tc.status || code != tc.code || !strings.Contains(msg, tc.msgHas) {
				t.Errorf("got %d %s %q, want %d %s containing %q", a.status, code, msg, tc.status, tc.code, tc.msgHas)
			}
			if strings.Contains(msg, "secret") {
				t.Errorf("message leaks internals: %q", msg)
			}
			if got := a.header.Get("Retry-After"); got != tc.retry {
				t.Errorf("Retry-After = %q, want %q", got, tc.retry)
			}
			if reached := e.backend.count() > 0; reached != tc.reached {
				t.Errorf("backend reached = %v, want %v", reached, tc.reached)
			}
		})
	}
}

func TestHTTPDeadline(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.RequestTimeout = 100 * time.Millisecond })
	e.backend.setAnswer(blockUntilDone)
	a := e.do(t, "POST", "/v1/call", `{"function": "messages:count", "args": {"room_id": "r1"}}`)
	code, msg := a.errorOf(t)
	if a.status != 504 || code != "DEADLINE_EXCEEDED" || !strings.Contains(msg, "room_id=r1") {
		t.Errorf("got %d %s %q, want 504 DEADLINE_EXCEEDED naming the shard", a.status, code, msg)
	}
}

func TestHTTPStatusMapping(t *testing.T) {
	for code, want := range map[codes.Code]int{
		codes.InvalidArgument: 400, codes.FailedPrecondition: 400, codes.OutOfRange: 400,
		codes.Unauthenticated: 401, codes.PermissionDenied: 403, codes.NotFound: 404,
		codes.AlreadyExists: 409, codes.Aborted: 409, codes.ResourceExhausted: 429,
		codes.Canceled: 499, codes.Unimplemented: 501, codes.Unavailable: 503,
		codes.DeadlineExceeded: 504, codes.Internal: 500, codes.Unknown: 500, codes.DataLoss: 500,
	} {
		if got := gateway.HTTPStatus(api.New(code, "x")); got != want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", code, got, want)
		}
	}
	if got := gateway.HTTPStatus(api.Wrap(gateway.ErrBodyTooLarge, "")); got != 413 {
		t.Errorf("HTTPStatus(ErrBodyTooLarge) = %d", got)
	}
	if got := gateway.HTTPStatus(context.DeadlineExceeded); got != 504 {
		t.Errorf("HTTPStatus(context.DeadlineExceeded) = %d", got)
	}
}

func TestConfigValidate(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	good := gateway.DefaultConfig()
	good.App, good.Backend, good.AuthOff = app, &fakeBackend{}, true
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*gateway.Config){
		"no app":       func(c *gateway.Config) { c.App = nil },
		"no backend":   func(c *gateway.Config) { c.Backend = nil },
		"no body size": func(c *gateway.Config) { c.MaxBodyBytes = 0 },
		"no timeout":   func(c *gateway.Config) { c.RequestTimeout = -1 },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
		if _, err := gateway.New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	// Two gateways cannot share one registry.
	good.Registerer = prometheus.NewRegistry()
	if _, err := gateway.New(good); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.New(good); err == nil {
		t.Error("second New on the same registry succeeded")
	}
}
