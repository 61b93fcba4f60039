package raftglobal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

var testSchema = []string{
	`CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS rnd (id INTEGER PRIMARY KEY, r INTEGER, b BLOB, t INTEGER)`,
}

func withSchema(cfg *Config) { cfg.Schema = testSchema }

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", timeout, err)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func put(k string, v int64) Command {
	return Command{SQL: []string{"INSERT INTO kv (k, v) VALUES (:k, :v) ON CONFLICT (k) DO UPDATE SET v = excluded.v"},
		Args: map[string]any{"k": k, "v": v}}
}

func get(k string) Command {
	return Command{SQL: []string{"SELECT v FROM kv WHERE k = :k"}, Args: map[string]any{"k": k}}
}

func countKV() Command { return Command{SQL: []string{"SELECT count(*) FROM kv"}} }

func wantCode(t testing.TB, err error, code codes.Code) {
	t.Helper()
	if got := api.CodeOf(err); got != code {
		t.Fatalf("error %v: code %v, want %v", err, got, code)
	}
}

func scalar(t testing.TB, res *api.Result) int64 {
	t.Helper()
	if res == nil || len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		t.Fatalf("want one value, got %+v", res)
	}
	v, ok := res.Rows[0][0].(int64)
	if !ok {
		t.Fatalf("want an integer, got %T %v", res.Rows[0][0], res.Rows[0][0])
	}
	return v
}

func isNotLeader(err error) (*NotLeaderError, bool) {
	var nl *NotLeaderError
	return nl, errors.As(err, &nl) && errors.Is(err, ErrNotLeader)
}
