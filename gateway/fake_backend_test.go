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
	deltas chan string // feeds the streams Subscribe returns
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

func (f *fakeBackend) RemoveNode(ctx context.Context, req api.RemoveRequest) error {
	return api.New(codes.Unimplemented, "fake backend: no global tier")
}

func (f *fakeBackend) RegisterShard(ctx context.Context, id, owner string, forwarded bool) (bool, string, error) {
	return false, "", api.New(codes.Unimplemented, "fake backend: no global tier")
}

// Subscribe answers a stream whose first update is a snapshot at seq 1
// echoing the shard, then one delta per value sent on f.deltas.
func (f *fakeBackend) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	f.mu.Lock()
	f.calls = append(f.calls, backendCall{Method: "Subscribe", ShardID: shardID, Name: function, Args: args})
	deltas := f.deltas
	f.mu.Unlock()
	return &fakeStream{shardID: shardID, deltas: deltas}, nil
}

type fakeStream struct {
	shardID string
	sent    bool
	seq     uint64
	deltas  chan string
}

func (s *fakeStream) Next(ctx context.Context) (*api.Update, error) {
	if !s.sent {
		s.sent, s.seq = true, 1
		return &api.Update{Kind: api.UpdateSnapshot, Seq: 1, ShardID: s.shardID, Columns: []string{"id", "body"}, Rows: [][]any{{int64(1), "first"}}, Keyed: true}, nil
	}
	select {
	case body := <-s.deltas:
		s.seq++
		return &api.Update{Kind: api.UpdateDelta, Seq: s.seq, ShardID: s.shardID, Keyed: true,
			Changes: []api.RowChange{{Op: api.ChangeInsert, Key: []any{int64(s.seq)}, Row: []any{int64(s.seq), body}}}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *fakeStream) Close() {}
