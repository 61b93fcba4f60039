package gateway_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/schema"
)

// FuzzHTTPEnvelope sends arbitrary bodies to POST /v1/call, /v1/sql and
// /v1/fanout through the gateway's real HTTP handler, in front of the fake
// backend (which answers every call it gets). After every input it checks:
// the handler did not panic; an error is the JSON error envelope with a
// code a caller can act on — never OK, INTERNAL or UNKNOWN, nor a 5xx
// status, since the backend never fails; an accepted call reached the
// backend as what it asked for (the function or statement, on the shard
// the answer names, which is a valid shard ID of the app); the answer is
// one JSON object.
//
//	go test -run '^$' -fuzz '^FuzzHTTPEnvelope$' -fuzztime 60s ./gateway/
func FuzzHTTPEnvelope(f *testing.F) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		f.Fatal(err)
	}
	be := &fakeBackend{}
	cfg := gateway.DefaultConfig()
	cfg.App, cfg.Backend, cfg.AuthOff = app, be, true
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.MaxBodyBytes = 64 << 10
	gw, err := gateway.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	h := gw.Handler()
	paths := []string{"/v1/call", "/v1/sql", "/v1/fanout"}
	for _, s := range []struct {
		path uint8
		body string
		hdr  string
	}{
		{0, sendBody, ""},
		{0, `{"function": "messages:list", "args": {"limit": 9007199254740993}, "shard_key": "r2"}`, ""},
		{0, `{"function": "users:get", "args": {"user_id": "u1"}, "consistency": "bookmark"}`, "12"},
		{0, `{"function": "messages:list", "args": {"room_id": 5}}`, ""},
		{0, `{"function": "messages:send", "args": {"room_id": "r1", "author": "a", "body": "b"}, "shard_key": "r2"}`, ""},
		{0, `{"function": "rooms:create", "args": {"room_id": "\u0000", "title": "t"}}`, ""},
		{0, `{"function": "x", "extra": 1}`, ""},
		{0, `{"function": "messages:list", "args": [1]}`, "x"},
		{0, `[]`, ""},
		{0, `{"function": "messages:list"} {}`, ""},
		{1, `{"shard_id": "room_id=r1", "sql": "SELECT :a", "params": {"a": 1.5e300}}`, ""},
		{1, `{"shard_id": "__global__", "sql": "SELECT 1", "consistency": "stale", "max_staleness_ms": -1}`, ""},
		{1, `{"shard_id": "room_id=", "sql": "SELECT 1"}`, ""},
		{1, `{"shard_id": "nope=1", "sql": " "}`, ""},
		{1, `{"sql": "SELECT 1", "params": {"a": {"b": 1}}}`, ""},
		{2, `{"function": "messages:list", "shard_keys": ["r1", "r2"], "merge": "top_k", "order_by": "id", "limit": 2}`, ""},
		{2, `{"function": "messages:list", "all_shards": true}`, ""},
		{2, `{"function": "messages:list", "shard_keys": ["r1"], "merge": "keyset", "order_by": "id", "cursor": "AAAA", "limit": 1}`, ""},
		{2, `{"function": "messages:list", "shard_keys": ["r1"], "concurrency": -1, "shard_timeout_ms": 9223372036854775807}`, ""},
		{2, `{"function": "messages:send", "shard_keys": ["r1"]}`, ""},
	} {
		f.Add(s.path, []byte(s.body), s.hdr)
	}
	f.Fuzz(func(t *testing.T, path uint8, body []byte, bookmark string) {
		p := paths[int(path)%len(paths)]
		be.mu.Lock()
		be.calls = nil
		be.mu.Unlock()
		r := httptest.NewRequest("POST", p, bytes.NewReader(body))
		r.RemoteAddr = "192.0.2.1:1234"
		if bookmark != "" && httpHeaderValue(bookmark) {
			r.Header.Set(gateway.BookmarkHeader, bookmark)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		var answer map[string]any
		dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&answer); err != nil {
			t.Fatalf("%s %q: answer %q is not a JSON object: %v", p, body, w.Body.String(), err)
		}
		if w.Code != http.StatusOK {
			e, _ := answer["error"].(map[string]any)
			code, _ := e["code"].(string)
			msg, _ := e["message"].(string)
			switch {
			case e == nil || msg == "":
				t.Fatalf("%s %q: status %d without an error envelope: %s", p, body, w.Code, w.Body)
			case code == "" || code == "OK" || code == "INTERNAL" || code == "UNKNOWN":
				t.Fatalf("%s %q: error code %q (%s)", p, body, code, msg)
			case w.Code >= 500:
				t.Fatalf("%s %q: status %d for %s: %s", p, body, w.Code, code, msg)
			}
			return
		}
		switch p {
		case "/v1/call", "/v1/sql":
			be.mu.Lock()
			calls := be.calls
			be.mu.Unlock()
			if len(calls) != 1 {
				t.Fatalf("%s %q: accepted with %d backend calls", p, body, len(calls))
			}
			c := calls[0]
			shard, _ := answer["shard_id"].(string)
			if shard != c.ShardID {
				t.Fatalf("%s %q: answer names shard %q, the backend ran on %q", p, body, shard, c.ShardID)
			}
			if _, _, err := app.ParseShardID(c.ShardID); err != nil {
				t.Fatalf("%s %q: ran on shard %q, which is not a valid shard ID: %v", p, body, c.ShardID, err)
			}
			var req struct {
				Function string `json:"function"`
				SQL      string `json:"sql"`
			}
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("%s %q: accepted, but encoding/json cannot read it: %v", p, body, err)
			}
			want := req.Function
			if p == "/v1/sql" {
				want = req.SQL
			}
			if c.Name != want {
				t.Fatalf("%s %q: backend ran %q", p, body, c.Name)
			}
			if p == "/v1/call" {
				fn := app.Function(c.Name)
				if fn == nil {
					t.Fatalf("%s %q: ran undeclared function %q", p, body, c.Name)
				}
				for _, a := range fn.Args {
					if _, ok := c.Args[a.Name]; !ok {
						t.Fatalf("%s %q: bound args %v lack %s", p, body, c.Args, a.Name)
					}
				}
			}
		case "/v1/fanout":
			for _, fl := range answer["failed"].([]any) {
				code := fl.(map[string]any)["code"]
				if code == "OK" || code == "INTERNAL" || code == "UNKNOWN" {
					t.Fatalf("%s %q: shard failure with code %v", p, body, code)
				}
			}
		}
	})
}

// httpHeaderValue reports whether s can be sent as a header value.
func httpHeaderValue(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00") && strings.TrimSpace(s) == s
}
