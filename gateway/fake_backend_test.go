package gateway_test

import (
	"context"
	"google.golang.org/grpc/codes"
	"sort"
	"sync"

	"github.com/lunora/lunora/api"
)

// backendCall is one request the fake backend received.
type backendCall struct {
	Method  string // "Call" or "Exec"
	ShardID string
	Name    string // function name or SQL
	Args    map[string]any
}

// fakeBackend is an in-memory gateway.Backend. By default Call and Exec
// answer one row echoing their inputs (columns sorted by name). answer, when
// set, replaces that; every method honours ctx: an answer that blocks on
// ctx.Done() models a node that never replies.
type fakeBackend struct {
	mu     sync.Mutex
	calls  []backendCall
	answer func(ctx context.Context, c backendCall) (*api.Result, error)
}

func (f *fakeBackend) setAnswer(a func(ctx context.Context, c backendCall) (*api.Result, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = a
}

func (f *fakeBackend) last() (backendCall, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return backendCall{}, false
	}
	return f.calls[len(f.calls)-1], true
}

func (f *fakeBackend) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeBackend) do(ctx context.Context, c backendCall) (*api.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	answer := f.answer
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if answer != nil {
		return answer(ctx, c)
	}
	names := make([]string, 0, len(c.Args))
	for k := range c.Args {
		names = append(names, k)
	}
	sort.Strings(names)
	row := make([]any, len(names))
	for i, n := range names {
		row[i] = c.Args[n]
	}
	return &api.Result{Columns: names, Rows: [][]any{row}, Seq: 7, ShardID: c.ShardID, RowsAffected: 1}, nil
}

func (f *fakeBackend) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	return f.do(ctx, backendCall{Method: "Call", ShardID: shardID, Name: function, Args: args})
}

func (f *fakeBackend) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	return f.do(ctx, backendCall{Method: "Exec", ShardID: shardID, Name: sql, Args: params})
}

func (f *fakeBackend) Status(ctx context.Context) (*api.Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &api.Status{NodeID: "dev", NodeAddress: "in-process", Version: "test", ActiveShards: 3, ShardsOnDisk: 4, InFlight: 1, UptimeSeconds: 12}, nil
}

// blockUntilDone is an answer modelling an unreachable peer.
func blockUntilDone(ctx context.Context, _ backendCall) (*api.Result, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeBackend) Join(ctx context.Context, req api.JoinRequest) (string, error) {
	return "", api.New(codes.Unimplemented, "fake backend: no global tier")
}

func (f *fakeBackend) RemoveNode(ctx context.Context, id string, forwarded bool) error {
	return api.New(codes.Unimplemented, "fake backend: no global tier")
}

func (f *fakeBackend) RegisterShard(ctx context.Context, id string, forwarded bool) (bool, error) {
	return false, api.New(codes.Unimplemented, "fake backend: no global tier")
}
