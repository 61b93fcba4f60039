package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/gateway"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tableAnswer answers each shard with its rows in data under cols; a shard
// not in data answers no rows.
func tableAnswer(cols []string, data map[string][][]any) func(context.Context, backendCall) (*api.Result, error) {
	return func(_ context.Context, c backendCall) (*api.Result, error) {
		return &api.Result{Columns: cols, Rows: data[c.ShardID], ShardID: c.ShardID, Seq: 1}, nil
	}
}

func fanCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tags returns column col of rows as strings.
func tags(rows [][]any, col int) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = fmt.Sprint(r[col])
	}
	return out
}

// requestCounts reads lunora_gateway_requests_total by
// "protocol function code".
func requestCounts(t *testing.T, e *env) map[string]float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "lunora_gateway_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out[l["protocol"]+" "+l["function"]+" "+l["code"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestFanOutConcat(t *testing.T) {
	e := newEnv(t, nil)
	e.backend.setAnswer(func(_ context.Context, c backendCall) (*api.Result, error) {
		key := c.Args["room_id"].(string)
		return &api.Result{Columns: []string{"tag", "limit"}, Rows: [][]any{{key + ":0", c.Args["limit"]}, {key + ":1", c.Args["limit"]}}}, nil
	})
	ctx := fanCtx(t)

	res, err := e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", Args: map[string]any{"limit": int64(5)}, ShardKeys: []string{"r3", "r1", "r2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"r1:0", "r1:1", "r2:0", "r2:1", "r3:0", "r3:1"}
	if got := tags(res.Rows, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
	if res.Shards != 3 || len(res.Failed) != 0 || res.NextCursor != "" || !reflect.DeepEqual(res.Columns, []string{"tag", "limit"}) {
		t.Errorf("result %+v", res)
	}
	if res.Rows[0][1] != int64(5) {
		t.Errorf("shared args not passed: %v", res.Rows[0])
	}
	e.backend.mu.Lock()
	calls := append([]backendCall(nil), e.backend.calls...)
	e.backend.mu.Unlock()
	sort.Slice(calls, func(i, j int) bool { return calls[i].ShardID < calls[j].ShardID })
	for i, c := range calls {
		key := fmt.Sprintf("r%d", i+1)
		if c.Method != "Call" || c.ShardID != "room_id="+key || c.Name != "messages:list" || c.Args["room_id"] != key || c.Args["limit"] != int64(5) {
			t.Errorf("backend call %d: %+v", i, c)
		}
	}
	if len(calls) != 3 {
		t.Errorf("%d backend calls, want 3", len(calls))
	}

	// Limit caps a concat; the default limit argument fills in.
	res, err = e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: []string{"r3", "r1", "r2"}, Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := tags(res.Rows, 0); !reflect.DeepEqual(got, want[:3]) || res.Rows[0][1] != int64(50) {
		t.Errorf("limited rows %v", res.Rows)
	}

	// One fan-out is one request in the metrics.
	if got := requestCounts(t, e); got["grpc fanout OK"] != 2 || len(got) != 1 {
		t.Errorf("requests_total = %v, want only grpc fanout OK = 2", got)
	}
}

func TestFanOutConcatBound(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.MaxFanOutRows = 5 })
	e.backend.setAnswer(tableAnswer([]string{"v"}, map[string][][]any{
		"room_id=a": {{1}, {2}, {3}},
		"room_id=b": {{4}, {5}, {6}},
	}))
	_, err := e.gw.FanOut(fanCtx(t), gateway.FanOutRequest{Function: "messages:list", ShardKeys: []string{"a", "b"}})
	if api.CodeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "5") {
		t.Errorf("6 rows over a bound of 5: %v", err)
	}
	res, err := e.gw.FanOut(fanCtx(t), gateway.FanOutRequest{Function: "messages:list", ShardKeys: []string{"a", "b"}, Limit: 4})
	if err != nil || len(res.Rows) != 4 {
		t.Errorf("with a limit: %v, %v", res, err)
	}
}

func TestFanOutTopK(t *testing.T) {
	e := newEnv(t, nil)
	cols := []string{"tag", "v"}
	e.backend.setAnswer(tableAnswer(cols, map[string][][]any{
		"room_id=a": {{"a0", int64(3)}, {"a1", "x"}, {"a2", nil}, {"a3", 2.5}},
		"room_id=b": {{"b0", int64(3)}, {"b1", []byte("z")}, {"b2", 3.0}, {"b3", int64(1)}},
		"room_id=c": {{"c0", nil}, {"c1", "a"}, {"c2", int64(2)}},
	}))
	ctx := fanCtx(t)
	keys := []string{"c", "b", "a"}

	// NULL < numbers (3 = 3.0, ties by shard then position) < text < blob.
	res, err := e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: keys, Merge: gateway.MergeTopK, OrderBy: "v", Limit: 8})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tags(res.Rows, 0), []string{"a2", "c0", "b3", "c2", "a3", "a0", "b0", "b2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ascending top 8 = %v, want %v", got, want)
	}
	res, err = e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: keys, Merge: gateway.MergeTopK, OrderBy: "v", Desc: true, Limit: 6})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tags(res.Rows, 0), []string{"b1", "a1", "c1", "a0", "b0", "b2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("descending top 6 = %v, want %v", got, want)
	}
	// k larger than everything: every row, still ordered.
	res, err = e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: keys, Merge: gateway.MergeTopK, OrderBy: "v", Limit: 100})
	if err != nil || len(res.Rows) != 11 || res.NextCursor != "" || res.Shards != 3 {
		t.Errorf("top 100: %+v, %v", res, err)
	}
	// The same inputs give the same answer.
	again, err := e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: []string{"a", "b", "c"}, Merge: gateway.MergeTopK, OrderBy: "v", Limit: 100})
	if err != nil || !reflect.DeepEqual(again, res) {
		t.Errorf("not deterministic: %+v vs %+v (%v)", again, res, err)
	}
}

// keysetData is 5 shards × 7 rows; seq is unique within a shard but shared
// across shards of the same parity, and each shard answers out of order.
func keysetData() (keys []string, data map[string][][]any, all []keysetRow) {
	data = map[string][][]any{}
	for i := range 5 {
		key := fmt.Sprintf("k%d", i)
		keys = append(keys, key)
		id := "room_id=" + key
		for j := 6; j >= 0; j-- {
			seq := int64(2*j + i%2)
			tag := fmt.Sprintf("%s/%d", key, seq)
			data[id] = append(data[id], []any{seq, tag})
			all = append(all, keysetRow{seq, id, tag})
		}
	}
	return keys, data, all
}

type keysetRow struct {
	seq   int64
	shard string
	tag   string
}

func TestFanOutKeyset(t *testing.T) {
	e := newEnv(t, nil)
	keys, data, all := keysetData()
	e.backend.setAnswer(tableAnswer([]string{"seq", "tag"}, data))
	ctx := fanCtx(t)

	for _, desc := range []bool{false, true} {
		want := append([]keysetRow(nil), all...)
		sort.Slice(want, func(i, j int) bool {
			a, b := want[i], want[j]
			if desc {
				a, b = b, a
			}
			if a.seq != b.seq {
				return a.seq < b.seq
			}
			return a.shard < b.shard
		})
		var wantTags []string
		for _, r := range want {
			wantTags = append(wantTags, r.tag)
		}

		var got []string
		cursor, pages := "", 0
		for {
			res, err := e.gw.FanOut(ctx, gateway.FanOutRequest{
				Function: "messages:list", ShardKeys: keys, Merge: gateway.MergeKeyset,
				OrderBy: "seq", Desc: desc, Limit: 4, Cursor: cursor,
			})
			if err != nil {
				t.Fatalf("desc=%v page %d: %v", desc, pages, err)
			}
			pages++
			if len(res.Rows) > 4 || res.Shards != 5 || len(res.Failed) != 0 {
				t.Fatalf("desc=%v page %d: %+v", desc, pages, res)
			}
			got = append(got, tags(res.Rows, 1)...)
			if res.NextCursor == "" {
				break
			}
			if pages > 20 {
				t.Fatal("keyset paging does not end")
			}
			cursor = res.NextCursor
		}
		if pages != 9 {
			t.Errorf("desc=%v: %d pages, want 9 (35 rows, 4 a page)", desc, pages)
		}
		if !reflect.DeepEqual(got, wantTags) {
			t.Errorf("desc=%v: visited\n%v\nwant\n%v", desc, got, wantTags)
		}
	}

	// A page that ends exactly at the last row says there is no more.
	res, err := e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: keys, Merge: gateway.MergeKeyset, OrderBy: "seq", Limit: 35})
	if err != nil || len(res.Rows) != 35 || res.NextCursor != "" {
		t.Errorf("one page of everything: %d rows, cursor %q, %v", len(res.Rows), res.NextCursor, err)
	}
}

func TestFanOutCursorMismatch(t *testing.T) {
	e := newEnv(t, nil)
	keys, data, _ := keysetData()
	e.backend.setAnswer(tableAnswer([]string{"seq", "tag"}, data))

	body := func(args, order, cursor string, desc bool) string {
		return fmt.Sprintf(`{"function": "messages:list", "args": %s, "shard_keys": ["%s"], "merge": "keyset", "order_by": %q, "desc": %v, "limit": 4, "cursor": %q}`,
			args, strings.Join(keys, `","`), order, desc, cursor)
	}
	a := e.do(t, "POST", "/v1/fanout", body(`{"limit": 10}`, "seq", "", false))
	if a.status != 200 {
		t.Fatalf("first page: %d %s", a.status, a.raw)
	}
	cursor, _ := a.body["next_cursor"].(string)
	if cursor == "" {
		t.Fatalf("first page has no next_cursor: %s", a.raw)
	}
	// The same request continues; a page size change is allowed.
	if a := e.do(t, "POST", "/v1/fanout", strings.Replace(body(`{"limit": 10}`, "seq", cursor, false), `"limit": 4`, `"limit": 5`, 1)); a.status != 200 {
		t.Errorf("second page: %d %s", a.status, a.raw)
	}
	for name, b := range map[string]string{
		"other args":   body(`{"limit": 11}`, "seq", cursor, false),
		"default args": body(`{}`, "seq", cursor, false),
		"other order":  body(`{"limit": 10}`, "tag", cursor, false),
		"other desc":   body(`{"limit": 10}`, "seq", cursor, true),
		"other shards": strings.Replace(body(`{"limit": 10}`, "seq", cursor, false), `"k0",`, ``, 1),
		"malformed":    body(`{"limit": 10}`, "seq", "not a cursor!", false),
		"truncated":    body(`{"limit": 10}`, "seq", cursor[:len(cursor)/2], false),
	} {
		a := e.do(t, "POST", "/v1/fanout", b)
		if code, msg := a.errorOf(t); a.status != 400 || code != "INVALID_ARGUMENT" || !strings.Contains(msg, "cursor") {
			t.Errorf("%s: %d %s", name, a.status, a.raw)
		}
	}
}

func TestFanOutShardFailures(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.RequestTimeout = 30 * time.Second })
	e.backend.setAnswer(func(ctx context.Context, c backendCall) (*api.Result, error) {
		switch c.ShardID {
		case "room_id=r2":
			return nil, api.New(codes.Unavailable, "node n2 is unreachable")
		case "room_id=r3":
			return blockUntilDone(ctx, c)
		case "room_id=r5":
			return &api.Result{Columns: []string{"other"}, Rows: [][]any{{int64(1)}}}, nil
		}
		return &api.Result{Columns: []string{"tag"}, Rows: [][]any{{c.ShardID}}}, nil
	})
	const shardTimeout = 300 * time.Millisecond
	start := time.Now()
	res, err := e.gw.FanOut(fanCtx(t), gateway.FanOutRequest{
		Function: "messages:list", ShardKeys: []string{"r5", "r4", "r3", "r2", "r1"}, ShardTimeout: shardTimeout,
	})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if got := tags(res.Rows, 0); !reflect.DeepEqual(got, []string{"room_id=r1", "room_id=r4"}) || res.Shards != 2 {
		t.Errorf("answered rows %v from %d shards", got, res.Shards)
	}
	var got []string
	for _, f := range res.Failed {
		got = append(got, f.ShardID+" "+f.Code.String())
		if f.Message == "" {
			t.Errorf("failure of %s has no message", f.ShardID)
		}
	}
	want := []string{"room_id=r2 Unavailable", "room_id=r3 DeadlineExceeded", "room_id=r5 Internal"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("failed %v, want %v (%+v)", got, want, res.Failed)
	}
	if !strings.Contains(res.Failed[1].Message, "shard timeout") || !strings.Contains(res.Failed[2].Message, "columns") {
		t.Errorf("messages: %+v", res.Failed)
	}
	// The blocked shard costs its own timeout, not the request's.
	if elapsed < shardTimeout || elapsed > 15*time.Second {
		t.Errorf("fan-out took %s with a %s shard timeout and a 30s request timeout", elapsed, shardTimeout)
	}
	if got := requestCounts(t, e); got["grpc fanout OK"] != 1 || len(got) != 1 {
		t.Errorf("requests_total = %v, want one grpc fanout OK", got)
	}
}

// inFlightGate is an answer that counts calls in flight. The first limit
// calls hold until their shard timeout ends them — unless a call beyond the
// limit arrives while they hold, which only a gateway that breaks the bound
// lets happen; later calls answer at once. So the maximum recorded is the
// bound the gateway keeps, with no guessing at how long to wait.
type inFlightGate struct {
	mu                     sync.Mutex
	inFlight, max, started int
	limit                  int
	changed                chan struct{}
}

func newGate(limit int) *inFlightGate {
	return &inFlightGate{limit: limit, changed: make(chan struct{})}
}

func (g *inFlightGate) bump(d int) (started int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight += d
	if d > 0 {
		g.started++
	}
	g.max = max(g.max, g.inFlight)
	close(g.changed)
	g.changed = make(chan struct{})
	return g.started
}

func (g *inFlightGate) answer(ctx context.Context, c backendCall) (*api.Result, error) {
	n := g.bump(1)
	defer g.bump(-1)
	for n <= g.limit {
		g.mu.Lock()
		over := g.inFlight > g.limit
		ch := g.changed
		g.mu.Unlock()
		if over {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &api.Result{Columns: []string{"shard"}, Rows: [][]any{{c.ShardID}}}, nil
}

func TestFanOutConcurrencyBound(t *testing.T) {
	for _, tc := range []struct{ concurrency, want, shards int }{{3, 3, 20}, {0, 16, 40}, {64, 64, 70}} {
		e := newEnv(t, nil)
		g := newGate(tc.want)
		e.backend.setAnswer(g.answer)
		var keys []string
		for i := range tc.shards {
			keys = append(keys, fmt.Sprintf("s%02d", i))
		}
		res, err := e.gw.FanOut(fanCtx(t), gateway.FanOutRequest{Function: "messages:list", ShardKeys: keys, Concurrency: tc.concurrency, ShardTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		g.mu.Lock()
		if g.max != tc.want {
			t.Errorf("concurrency %d: at most %d calls in flight, want %d", tc.concurrency, g.max, tc.want)
		}
		g.mu.Unlock()
		// The held calls were the first targets, ended by their timeout;
		// every other shard answered.
		if res.Shards != tc.shards-tc.want || len(res.Failed) != tc.want {
			t.Fatalf("concurrency %d: %d shards answered, %d failed", tc.concurrency, res.Shards, len(res.Failed))
		}
		for i, f := range res.Failed {
			if f.ShardID != "room_id="+keys[i] || f.Code != codes.DeadlineExceeded {
				t.Errorf("concurrency %d: failed[%d] = %+v", tc.concurrency, i, f)
			}
		}
	}
}

func TestFanOutBadInput(t *testing.T) {
	var lb *listingBackend
	e := newEnv(t, func(c *gateway.Config) {
		c.MaxFanOutShards = 3
		c.MaxFanOutRows = 100
	})
	lister := newEnv(t, func(c *gateway.Config) {
		withLister(&lb, 10, "room_id=a", "room_id=b", "room_id=c", "room_id=d")(c)
		c.MaxFanOutShards = 3
	})
	for _, tc := range []struct {
		name, body string
		status     int
		code, msg  string
	}{
		{"mutation", `{"function": "messages:send", "shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "mutation"},
		{"global", `{"function": "users:get", "args": {"user_id": "u"}, "shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "global tier"},
		{"root", `{"function": "settings:get", "args": {"key": "k"}, "shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "root shard"},
		{"unknown function", `{"function": "made:up", "shard_keys": ["a"]}`, 404, "NOT_FOUND", "unknown function"},
		{"no function", `{"shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "function"},
		{"unknown order_by", `{"function": "messages:list", "shard_keys": ["a"], "merge": "top_k", "order_by": "nope", "limit": 3}`, 400, "INVALID_ARGUMENT", `order_by "nope"`},
		{"both", `{"function": "messages:list", "shard_keys": ["a"], "all_shards": true}`, 400, "INVALID_ARGUMENT", "exclusive"},
		{"neither", `{"function": "messages:list"}`, 400, "INVALID_ARGUMENT", "shard_keys"},
		{"too many keys", `{"function": "messages:list", "shard_keys": ["a", "b", "c", "d"]}`, 400, "INVALID_ARGUMENT", "3"},
		{"duplicate key", `{"function": "messages:list", "shard_keys": ["a", "a"]}`, 400, "INVALID_ARGUMENT", "twice"},
		{"empty key", `{"function": "messages:list", "shard_keys": [""]}`, 400, "INVALID_ARGUMENT", "empty"},
		{"shard arg set", `{"function": "messages:list", "args": {"room_id": "a"}, "shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "room_id"},
		{"bad arg", `{"function": "messages:list", "args": {"limit": "x"}, "shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "limit"},
		{"unknown arg", `{"function": "messages:list", "args": {"nope": 1}, "shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "nope"},
		{"bad merge", `{"function": "messages:list", "shard_keys": ["a"], "merge": "zip"}`, 400, "INVALID_ARGUMENT", "merge"},
		{"top_k without order_by", `{"function": "messages:list", "shard_keys": ["a"], "merge": "top_k", "limit": 3}`, 400, "INVALID_ARGUMENT", "order_by"},
		{"top_k without limit", `{"function": "messages:list", "shard_keys": ["a"], "merge": "top_k", "order_by": "id"}`, 400, "INVALID_ARGUMENT", "limit"},
		{"keyset without limit", `{"function": "messages:list", "shard_keys": ["a"], "merge": "keyset", "order_by": "id"}`, 400, "INVALID_ARGUMENT", "page size"},
		{"order_by on concat", `{"function": "messages:list", "shard_keys": ["a"], "order_by": "id"}`, 400, "INVALID_ARGUMENT", "order_by"},
		{"cursor on top_k", `{"function": "messages:list", "shard_keys": ["a"], "merge": "top_k", "order_by": "id", "limit": 1, "cursor": "x"}`, 400, "INVALID_ARGUMENT", "cursor"},
		{"limit over bound", `{"function": "messages:list", "shard_keys": ["a"], "limit": 101}`, 400, "INVALID_ARGUMENT", "100"},
		{"negative limit", `{"function": "messages:list", "shard_keys": ["a"], "limit": -1}`, 400, "INVALID_ARGUMENT", "limit"},
		{"concurrency over bound", `{"function": "messages:list", "shard_keys": ["a"], "concurrency": 65}`, 400, "INVALID_ARGUMENT", "64"},
		{"negative shard timeout", `{"function": "messages:list", "shard_keys": ["a"], "shard_timeout_ms": -5}`, 400, "INVALID_ARGUMENT", "timeout"},
		{"all shards, no lister", `{"function": "messages:list", "all_shards": true}`, 400, "FAILED_PRECONDITION", "shard_keys"},
		{"all shards over bound", `{"function": "messages:list", "all_shards": true}`, 400, "FAILED_PRECONDITION", "more than 3 shards"},
		{"bad JSON", `{"function": `, 400, "INVALID_ARGUMENT", "malformed JSON"},
		{"unknown field", `{"function": "messages:list", "shard_keys": ["a"], "shards": 2}`, 400, "INVALID_ARGUMENT", "shards"},
		{"wrong type", `{"function": "messages:list", "shard_keys": "a"}`, 400, "INVALID_ARGUMENT", "shard_keys"},
		{"args not an object", `{"function": "messages:list", "args": [1], "shard_keys": ["a"]}`, 400, "INVALID_ARGUMENT", "args"},
	} {
		env := e
		if tc.name == "all shards over bound" {
			env = lister
		}
		a := env.do(t, "POST", "/v1/fanout", tc.body)
		code, msg := a.errorOf(t)
		if a.status != tc.status || code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %s, want %d %s mentioning %q", tc.name, a.status, a.raw, tc.status, tc.code, tc.msg)
		}
	}
	// Only the unknown order_by reached the shards: the rest is refused
	// before any call.
	if n := e.backend.count(); n != 1 {
		t.Errorf("%d backend calls, want 1", n)
	}
	if a := e.do(t, "GET", "/v1/fanout", ``); a.status != 405 {
		t.Errorf("GET /v1/fanout: %d %s", a.status, a.raw)
	}
}

func TestFanOutAllShards(t *testing.T) {
	var lb *listingBackend
	ids := []string{"room_id=g", "room_id=a", "room_id=b", "room_id=c", "room_id=d", "room_id=e", "room_id=f", "user=zz"}
	e := newEnv(t, withLister(&lb, 3, ids...))
	e.backend.setAnswer(func(_ context.Context, c backendCall) (*api.Result, error) {
		return &api.Result{Columns: []string{"shard", "room"}, Rows: [][]any{{c.ShardID, c.Args["room_id"]}}}, nil
	})
	res, err := e.gw.FanOut(fanCtx(t), gateway.FanOutRequest{Function: "messages:list", AllShards: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"room_id=a", "room_id=b", "room_id=c", "room_id=d", "room_id=e", "room_id=f", "room_id=g"}
	if got := tags(res.Rows, 0); !reflect.DeepEqual(got, want) || res.Shards != 7 || len(res.Failed) != 0 {
		t.Errorf("rows %v from %d shards, failed %+v", got, res.Shards, res.Failed)
	}
	if got := tags(res.Rows, 1); !reflect.DeepEqual(got, []string{"a", "b", "c", "d", "e", "f", "g"}) {
		t.Errorf("shard key argument per shard: %v", got)
	}
	// Each page asks for no more than would still fit the bound (1000) plus one.
	wantLists := []listCall{{"room_id", "", 1000}, {"room_id", "room_id=c", 998}, {"room_id", "room_id=f", 995}}
	if got := lb.listCalls(); !reflect.DeepEqual(got, wantLists) {
		t.Errorf("ListShards calls %+v, want %+v", got, wantLists)
	}

	// Keyset pages over all shards.
	var got []string
	cursor := ""
	for range 10 {
		res, err := e.gw.FanOut(fanCtx(t), gateway.FanOutRequest{Function: "messages:list", AllShards: true, Merge: gateway.MergeKeyset, OrderBy: "shard", Desc: true, Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tags(res.Rows, 0)...)
		if cursor = res.NextCursor; cursor == "" {
			break
		}
	}
	if want := []string{"room_id=g", "room_id=f", "room_id=e", "room_id=d", "room_id=c", "room_id=b", "room_id=a"}; !reflect.DeepEqual(got, want) {
		t.Errorf("keyset over all shards: %v", got)
	}
}

func TestFanOutHTTP(t *testing.T) {
	e := newEnv(t, nil)
	cols := []string{"id", "body", "raw"}
	data := map[string][][]any{
		"room_id=a": {{int64(4), "a4", []byte("x")}, {int64(1), "a1", nil}},
		"room_id=b": {{int64(9007199254740993), "b-big", 1.5}, {int64(2), "b2", nil}},
	}
	e.backend.setAnswer(func(ctx context.Context, c backendCall) (*api.Result, error) {
		if c.ShardID == "room_id=c" {
			return nil, api.New(codes.Unavailable, "node n3 is unreachable")
		}
		return tableAnswer(cols, data)(ctx, c)
	})
	a := e.do(t, "POST", "/v1/fanout", `{"function": "messages:list", "args": {"limit": 10}, "shard_keys": ["c", "b", "a"],
		"merge": "top_k", "order_by": "id", "desc": true, "limit": 3, "concurrency": 2, "shard_timeout_ms": 5000}`)
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	var got struct {
		Columns    []string          `json:"columns"`
		Rows       [][]any           `json:"rows"`
		Shards     int               `json:"shards"`
		Failed     []json.RawMessage `json:"failed"`
		NextCursor *string           `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(a.raw), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Columns, cols) || got.Shards != 2 || got.NextCursor == nil || *got.NextCursor != "" || len(got.Rows) != 3 {
		t.Errorf("answer %s", a.raw)
	}
	if !strings.Contains(a.raw, `[9007199254740993,"b-big",1.5],[4,"a4","eA=="],[2,"b2",null]`) {
		t.Errorf("rows: %s", a.raw)
	}
	if len(got.Failed) != 1 || string(got.Failed[0]) != `{"shard_id":"room_id=c","code":"UNAVAILABLE","message":"node n3 is unreachable"}` {
		t.Errorf("failed: %s", a.raw)
	}

	// No shard: an empty, well-formed answer.
	a = e.do(t, "POST", "/v1/fanout", `{"function": "messages:list", "shard_keys": ["c"], "merge": "keyset", "order_by": "id", "limit": 2}`)
	if a.status != 200 || !strings.Contains(a.raw, `"columns":[],"rows":[],"shards":0,"failed":[{"shard_id":"room_id=c"`) || !strings.Contains(a.raw, `"next_cursor":""`) {
		t.Errorf("all shards failed: %d %s", a.status, a.raw)
	}
	if got := requestCounts(t, e); got["http fanout OK"] != 2 || len(got) != 1 {
		t.Errorf("requests_total = %v", got)
	}
}

func TestFanOutGRPC(t *testing.T) {
	e := newEnv(t, nil)
	keys, data, _ := keysetData()
	e.backend.setAnswer(tableAnswer([]string{"seq", "tag"}, data))
	c := e.grpcClient(t)
	ctx := fanCtx(t)

	req := &lunorav1.FanOutRequest{
		Function: "messages:list", Args: map[string]*lunorav1.Value{"limit": integer(7)}, ShardKeys: keys,
		Merge: lunorav1.FanOutRequest_KEYSET, OrderBy: "seq", Limit: 4, ShardTimeoutMs: 5000,
	}
	resp, err := c.FanOut(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.GetRows() {
		got = append(got, r.GetValues()[1].GetText())
	}
	// seq 0 on the even shards k0, k2, k4, then seq 1 on k1.
	if want := []string{"k0/0", "k2/0", "k4/0", "k1/1"}; !reflect.DeepEqual(got, want) || resp.GetShards() != 5 || resp.GetNextCursor() == "" ||
		!reflect.DeepEqual(resp.GetColumns(), []string{"seq", "tag"}) || resp.GetRows()[0].GetValues()[0].GetInteger() != 0 {
		t.Errorf("first page %v: %v", got, resp)
	}
	req.Cursor = resp.GetNextCursor()
	resp, err = c.FanOut(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first := resp.GetRows()[0].GetValues()[1].GetText(); first != "k3/1" {
		t.Errorf("second page starts at %s", first)
	}

	req.Args["limit"] = integer(8)
	if _, err := c.FanOut(ctx, req); status.Code(err) != codes.InvalidArgument {
		t.Errorf("cursor with other args: %v", err)
	}
	if _, err := c.FanOut(ctx, &lunorav1.FanOutRequest{Function: "messages:send", ShardKeys: keys}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("mutation: %v", err)
	}
	if got := requestCounts(t, e); got["grpc fanout OK"] != 2 || got["grpc fanout INVALID_ARGUMENT"] != 2 {
		t.Errorf("requests_total = %v", got)
	}
}

func TestFanOutRequestDeadline(t *testing.T) {
	// The request timeout bounds the shard timeout and the whole fan-out:
	// shards it cuts off, asked or not, are failures, not a failed call.
	e := newEnv(t, func(c *gateway.Config) { c.RequestTimeout = 300 * time.Millisecond })
	e.backend.setAnswer(blockUntilDone)
	start := time.Now()
	res, err := e.gw.FanOut(fanCtx(t), gateway.FanOutRequest{Function: "messages:list", ShardKeys: []string{"a", "b"}, Concurrency: 1, ShardTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 15*time.Second {
		t.Errorf("took %s with a 300ms request timeout", elapsed)
	}
	if res.Shards != 0 || len(res.Failed) != 2 || res.Failed[0].Code != codes.DeadlineExceeded || res.Failed[1].Code != codes.DeadlineExceeded ||
		!strings.Contains(res.Failed[1].Message, "not asked") {
		t.Errorf("result %+v", res)
	}

	// A caller that is gone gets its own error, not a result.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.gw.FanOut(ctx, gateway.FanOutRequest{Function: "messages:list", ShardKeys: []string{"a"}}); api.CodeOf(err) != codes.Canceled {
		t.Errorf("canceled caller: %v", err)
	}
}
