// Package e2e_test runs Lunora end to end: the built lunora-node and
// lunora-gateway as real processes (killed, restarted, fed bad input) and a
// whole dev node in-process, all over loopback.
package e2e_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/lunoratest"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
)

func TestMain(m *testing.M) { lunoratest.Main(m) }

// callTimeout bounds one call of a test.
const callTimeout = 15 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// chatSchemaFile writes the chat example (what dev mode serves) to a file
// for serve and the gateway.
func chatSchemaFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lunora.yaml")
	if err := os.WriteFile(path, chat.Schema, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// countShardFiles counts the *.db files under <data>/shards.
func countShardFiles(t testing.TB, data string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(data, "shards"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".db") {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mustHTTP calls a function over HTTP and fails t unless it answers 200.
func mustHTTP(t testing.TB, c *lunoratest.HTTPClient, function string, args map[string]any) *lunoratest.CallResult {
	t.Helper()
	resp, err := c.Call(ctxT(t), function, args)
	if err != nil {
		t.Fatalf("%s %v: %v", function, args, err)
	}
	if resp.Result == nil {
		t.Fatalf("%s %v: %v", function, args, resp)
	}
	return resp.Result
}

// mustGRPC calls a function over gRPC and fails t on error.
func mustGRPC(t testing.TB, c lunorav1.LunoraClient, function string, args map[string]any) *lunorav1.CallResponse {
	t.Helper()
	resp, err := c.Call(ctxT(t), &lunorav1.CallRequest{Function: function, Args: lunoratest.Args(args)})
	if err != nil {
		t.Fatalf("%s %v: %v", function, args, err)
	}
	return resp
}

// jsonInt reads an integer of a JSON result.
func jsonInt(t testing.TB, v any) int64 {
	t.Helper()
	n, ok := v.(interface{ Int64() (int64, error) })
	if !ok {
		t.Fatalf("%v (%T) is not a JSON number", v, v)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// message is one row of messages:list.
type message struct {
	id        int64
	author    string
	body      string
	createdAt int64
}

// messagesFromHTTP reads the rows of messages:list answered over HTTP.
func messagesFromHTTP(t testing.TB, r *lunoratest.CallResult) []message {
	t.Helper()
	id, author, body, created := r.Column("id"), r.Column("author"), r.Column("body"), r.Column("created_at")
	if id < 0 || author < 0 || body < 0 || created < 0 {
		t.Fatalf("messages:list columns = %v", r.Columns)
	}
	out := make([]message, len(r.Rows))
	for i, row := range r.Rows {
		out[i] = message{id: jsonInt(t, row[id]), author: row[author].(string), body: row[body].(string), createdAt: jsonInt(t, row[created])}
	}
	return out
}

// messagesFromGRPC reads the rows of messages:list answered over gRPC.
func messagesFromGRPC(t testing.TB, r *lunorav1.CallResponse) []message {
	t.Helper()
	col := map[string]int{}
	for i, c := range r.GetColumns() {
		col[c] = i
	}
	for _, c := range []string{"id", "author", "body", "created_at"} {
		if _, ok := col[c]; !ok {
			t.Fatalf("messages:list columns = %v", r.GetColumns())
		}
	}
	out := make([]message, len(r.GetRows()))
	for i, row := range r.GetRows() {
		v := row.GetValues()
		out[i] = message{id: v[col["id"]].GetInteger(), author: v[col["author"]].GetText(), body: v[col["body"]].GetText(), createdAt: v[col["created_at"]].GetInteger()}
	}
	return out
}

func bodies(ms []message) map[string]int64 {
	out := make(map[string]int64, len(ms))
	for _, m := range ms {
		out[m.body] = m.id
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }
