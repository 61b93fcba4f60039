package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// statusCode names the gRPC code of err ("OK" for nil).
func statusCode(err error) string { return status.Code(err).String() }

// TestBadInputThroughGateway sends bad input through a real lunora-gateway
// in front of a real lunora-node and checks the exact code and HTTP
// status of each answer — codes the node decides (the sandbox, foreign
// rows) cross the gRPC hop unchanged — and that the node still serves.
func TestBadInputThroughGateway(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	schema := chatSchemaFile(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", schema))
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schema, node.GRPCAddr()))
	h := lunoratest.NewHTTPClient(t, gw.HTTPAddr())
	g := lunoratest.DialGRPC(t, gw.GRPCAddr())

	attached := filepath.Join(t.TempDir(), "escape.db")
	call := func(fn string, args string) string {
		return fmt.Sprintf(`{"function":%q,"args":%s}`, fn, args)
	}
	sql := func(shard, stmt string) string {
		return fmt.Sprintf(`{"shard_id":%q,"sql":%q}`, shard, stmt)
	}
	cases := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"unknown function", "/v1/call", call("messages:nope", `{"room_id":"r1"}`), 404, "NOT_FOUND"},
		{"missing argument", "/v1/call", call("messages:send", `{"room_id":"r1","author":"ada"}`), 400, "INVALID_ARGUMENT"},
		{"mistyped argument", "/v1/call", call("messages:list", `{"room_id":"r1","limit":"ten"}`), 400, "INVALID_ARGUMENT"},
		{"unknown argument", "/v1/call", call("messages:count", `{"room_id":"r1","extra":1}`), 400, "INVALID_ARGUMENT"},
		{"argument over max_len", "/v1/call", call("messages:send", fmt.Sprintf(`{"room_id":"r1","author":"ada","body":%q}`, strings.Repeat("x", 4001))), 400, "INVALID_ARGUMENT"},
		{"malformed JSON", "/v1/call", `{"function":"messages:list","args":{"room_id":`, 400, "INVALID_ARGUMENT"},
		{"not an object", "/v1/call", `["messages:list"]`, 400, "INVALID_ARGUMENT"},
		{"body over 1 MiB", "/v1/call", call("messages:send", fmt.Sprintf(`{"room_id":"r1","author":"ada","body":%q}`, strings.Repeat("x", 1<<20))), 413, "RESOURCE_EXHAUSTED"},
		{"lunora_assert", "/v1/call", call("messages:send", `{"room_id":"r1","author":"ada","body":"   "}`), 400, "FAILED_PRECONDITION"},
		{"ATTACH", "/v1/sql", sql("room_id=mine", "ATTACH DATABASE '"+attached+"' AS escape"), 403, "PERMISSION_DENIED"},
		{"writable_schema", "/v1/sql", sql("room_id=mine", "PRAGMA writable_schema=ON"), 403, "PERMISSION_DENIED"},
		{"load_extension", "/v1/sql", sql("room_id=mine", "SELECT load_extension('x')"), 403, "PERMISSION_DENIED"},
		{"foreign row", "/v1/sql", sql("room_id=mine", "INSERT INTO messages(room_id,author,body,created_at) VALUES ('other','a','b',0)"), 400, "INVALID_ARGUMENT"},
		{"SQL syntax error", "/v1/sql", sql("room_id=mine", "SELECT FROM messages WHERE"), 400, "INVALID_ARGUMENT"},
	}
	for _, tc := range cases {
		resp, err := h.Post(ctxT(t), tc.path, []byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if resp.Status != tc.status || resp.Code() != tc.code {
			t.Errorf("%s: got %v, want HTTP %d %s", tc.name, resp, tc.status, tc.code)
		}
	}
	if _, err := os.Stat(attached); !os.IsNotExist(err) {
		t.Errorf("the refused ATTACH created %s (stat: %v)", attached, err)
	}
	// The refused foreign row is in neither shard.
	for _, shard := range []string{"room_id=mine", "room_id=other"} {
		resp, err := h.SQL(ctxT(t), shard, "SELECT count(*) FROM messages", nil)
		if err != nil || resp.Result == nil {
			t.Fatalf("count %s: %v %v", shard, resp, err)
		}
		if n := jsonInt(t, resp.Result.Rows[0][0]); n != 0 {
			t.Errorf("shard %s holds %d messages after the refused insert, want 0", shard, n)
		}
	}

	// The same codes over gRPC.
	grpcCases := []struct {
		name string
		run  func(ctx context.Context) error
		code string
	}{
		{"unknown function", func(ctx context.Context) error {
			_, err := g.Call(ctx, &lunorav1.CallRequest{Function: "messages:nope", Args: lunoratest.Args(map[string]any{"room_id": "r1"})})
			return err
		}, "NotFound"},
		{"missing argument", func(ctx context.Context) error {
			_, err := g.Call(ctx, &lunorav1.CallRequest{Function: "messages:send", Args: lunoratest.Args(map[string]any{"room_id": "r1", "author": "ada"})})
			return err
		}, "InvalidArgument"},
		{"mistyped argument", func(ctx context.Context) error {
			_, err := g.Call(ctx, &lunorav1.CallRequest{Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": "r1", "limit": "ten"})})
			return err
		}, "InvalidArgument"},
		{"message over the size limit", func(ctx context.Context) error {
			_, err := g.Call(ctx, &lunorav1.CallRequest{Function: "messages:send", Args: lunoratest.Args(map[string]any{"room_id": "r1", "author": "ada", "body": strings.Repeat("x", 2<<20)})})
			return err
		}, "ResourceExhausted"},
		{"ATTACH", func(ctx context.Context) error {
			_, err := g.Sql(ctx, &lunorav1.SqlRequest{ShardId: "room_id=mine", Sql: "ATTACH DATABASE '" + attached + "' AS escape"})
			return err
		}, "PermissionDenied"},
		{"load_extension", func(ctx context.Context) error {
			_, err := g.Sql(ctx, &lunorav1.SqlRequest{ShardId: "room_id=mine", Sql: "SELECT load_extension('x')"})
			return err
		}, "PermissionDenied"},
		{"foreign row", func(ctx context.Context) error {
			_, err := g.Sql(ctx, &lunorav1.SqlRequest{ShardId: "room_id=mine", Sql: "INSERT INTO messages(room_id,author,body,created_at) VALUES ('other','a','b',0)"})
			return err
		}, "InvalidArgument"},
		{"lunora_assert", func(ctx context.Context) error {
			_, err := g.Call(ctx, &lunorav1.CallRequest{Function: "messages:send", Args: lunoratest.Args(map[string]any{"room_id": "r1", "author": "ada", "body": " "})})
			return err
		}, "FailedPrecondition"},
	}
	for _, tc := range grpcCases {
		if got := statusCode(tc.run(ctxT(t))); got != tc.code {
			t.Errorf("gRPC %s: code %s, want %s", tc.name, got, tc.code)
		}
	}

	// After all that the node serves a normal call, over both protocols.
	sent := mustHTTP(t, h, "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "still here"})
	list := mustGRPC(t, g, "messages:list", map[string]any{"room_id": "r1"})
	if got := messagesFromGRPC(t, list); len(got) != 1 || got[0].body != "still here" || got[0].id != jsonInt(t, sent.Rows[0][0]) {
		t.Fatalf("room r1 after the bad input = %+v, want only the message just sent", got)
	}
	if _, ok := node.Wait(0); ok {
		t.Fatal("the node exited")
	}
}

// TestFullMailbox: with a mailbox of one mutation per shard, concurrent
// writes to one shard are either committed (200) or refused at once with
// 429 RESOURCE_EXHAUSTED and a Retry-After header — nothing else — and
// exactly the 200s are stored. Whether a given round overflows the mailbox
// depends on timing, so rounds grow in concurrency until one does; never
// seeing a 429 within the time limit fails.
func TestFullMailbox(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "dev", "-mailbox", "1", "-max-conns-per-ip", "2048")) // up to 512 callers at once, above the default per-client cap
	h := lunoratest.NewHTTPClient(t, node.HTTPAddr())
	g := lunoratest.DialGRPC(t, node.GRPCAddr())

	const (
		room       = "hot"
		timeLimit  = 60 * time.Second
		maxWorkers = 512
	)
	var ok, rejected, seen int
	deadline := time.Now().Add(timeLimit)
	for workers := 8; rejected == 0; workers = min(workers*2, maxWorkers) {
		if time.Now().After(deadline) {
			t.Fatalf("no 429 within %s (%d calls, all OK); the mailbox bound of 1 is not enforced", timeLimit, ok)
		}
		var (
			mu    sync.Mutex
			wg    sync.WaitGroup
			start = make(chan struct{})
		)
		for w := range workers {
			wg.Add(1)
			body := fmt.Sprintf("round %d worker %d", seen, w)
			go func() {
				defer wg.Done()
				<-start
				resp, err := h.Call(context.Background(), "messages:send", map[string]any{"room_id": room, "author": "hammer", "body": body})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("%s: no answer: %v", body, err)
				case resp.Status == http.StatusOK:
					ok++
				case resp.Status == http.StatusTooManyRequests && resp.Code() == "RESOURCE_EXHAUSTED":
					rejected++
					if resp.Header.Get("Retry-After") == "" {
						t.Errorf("%s: 429 without a Retry-After header: %v", body, resp)
					}
				default:
					t.Errorf("%s: %v, want 200 or 429 RESOURCE_EXHAUSTED", body, resp)
				}
			}()
		}
		close(start)
		wg.Wait()
		seen++
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d rounds: %d OK, %d rejected with 429", seen, ok, rejected)
	count := mustHTTP(t, h, "messages:count", map[string]any{"room_id": room})
	if n := jsonInt(t, count.Rows[0][0]); n != int64(ok) {
		t.Fatalf("room %s holds %d messages, want the %d acknowledged", room, n, ok)
	}

	// Over gRPC the same refusal is RESOURCE_EXHAUSTED with a RetryInfo.
	var mu sync.Mutex
	var retryInfo, grpcRejected int
	err := lunoratest.Poll(timeLimit, func() error {
		var wg sync.WaitGroup
		for w := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := g.Call(context.Background(), &lunorav1.CallRequest{Function: "messages:send", Args: lunoratest.Args(map[string]any{"room_id": room, "author": "grpc", "body": fmt.Sprint("grpc ", w)})})
				if err == nil {
					return
				}
				st := status.Convert(err)
				mu.Lock()
				defer mu.Unlock()
				if st.Code().String() != "ResourceExhausted" {
					t.Errorf("gRPC call: %v, want OK or ResourceExhausted", err)
					return
				}
				grpcRejected++
				for _, d := range st.Details() {
					if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
						retryInfo++
					}
				}
			}()
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if grpcRejected == 0 {
			return fmt.Errorf("no RESOURCE_EXHAUSTED over gRPC yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if retryInfo != grpcRejected {
		t.Errorf("%d of %d gRPC RESOURCE_EXHAUSTED answers carry a google.rpc.RetryInfo", retryInfo, grpcRejected)
	}
}
