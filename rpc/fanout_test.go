package rpc_test

import (
	"context"
	"errors"
	"math"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/client"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// fanOutFront is an rpc.Frontend that answers FanOut with res (or err) and
// remembers the request; its other methods are unused.
type fanOutFront struct {
	mu  sync.Mutex
	got api.FanOutRequest
	res *api.FanOutResult
	err error
}

var _ rpc.Frontend = (*fanOutFront)(nil)

func (f *fanOutFront) FanOut(ctx context.Context, req api.FanOutRequest) (*api.FanOutResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = req
	return f.res, f.err
}

func (f *fanOutFront) request() api.FanOutRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got
}

func (f *fanOutFront) Call(ctx context.Context, function string, args map[string]any, shardKey string, read api.ReadOptions) (*api.Result, error) {
	return nil, api.New(codes.Unimplemented, "fanOutFront: no Call")
}

func (f *fanOutFront) Sql(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	return nil, api.New(codes.Unimplemented, "fanOutFront: no Sql")
}

func (f *fanOutFront) Status(ctx context.Context) (*api.Status, error) {
	return nil, api.New(codes.Unimplemented, "fanOutFront: no Status")
}

func (f *fanOutFront) Subscribe(ctx context.Context, function string, args map[string]any, shardKey string, sinceSeq uint64) (api.Stream, error) {
	return nil, api.New(codes.Unimplemented, "fanOutFront: no Subscribe")
}

// startPublic serves front through rpc.PublicServer on 127.0.0.1:0 and
// returns a Go client for it.
func startPublic(t *testing.T, front rpc.Frontend) *client.Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(rpc.ServerOptions()...)
	rpc.RegisterPublicServer(srv, rpc.NewPublicServer(front, nil))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := client.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestFanOutRoundTrip(t *testing.T) {
	want := &api.FanOutResult{
		Columns: []string{"id", "body", "raw", "score", "gone"},
		Rows: [][]any{
			{int64(math.MaxInt64), "héllo", []byte{0, 255}, 2.5, nil},
			{int64(-1), "", []byte{}, math.Inf(1), nil},
		},
		Shards: 2,
		Failed: []api.ShardFailure{
			{ShardID: "room_id=r2", Code: codes.Unavailable, Message: "node n2 is unreachable"},
			{ShardID: "room_id=r3", Code: codes.DeadlineExceeded, Message: "shard room_id=r3 did not answer within the shard timeout of 2s"},
		},
		NextCursor: "opaque",
	}
	front := &fanOutFront{res: want}
	c := startPublic(t, front)
	ctx := testCtx(t)

	req := api.FanOutRequest{
		Function:     "messages:list",
		Args:         map[string]any{"limit": int64(9007199254740993), "q": "x", "b": []byte{1}, "f": 0.5, "ok": true, "n": nil},
		ShardKeys:    []string{"r1", "r2", "r3"},
		Merge:        api.MergeKeyset,
		OrderBy:      "id",
		Desc:         true,
		Limit:        4,
		Cursor:       "abc",
		Concurrency:  8,
		ShardTimeout: 1500 * time.Millisecond,
	}
	got, err := c.FanOut(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("result\n%#v\nwant\n%#v", got, want)
	}
	if seen := front.request(); !reflect.DeepEqual(seen, req) {
		t.Errorf("frontend saw\n%#v\nwant\n%#v", seen, req)
	}

	// All shards, top-k, a sub-millisecond timeout rounded up.
	req = api.FanOutRequest{Function: "messages:list", Args: map[string]any{}, AllShards: true, Merge: api.MergeTopK, OrderBy: "id", Limit: 1, ShardTimeout: 1500 * time.Microsecond}
	if _, err := c.FanOut(ctx, req); err != nil {
		t.Fatal(err)
	}
	req.ShardTimeout = 2 * time.Millisecond
	if seen := front.request(); !reflect.DeepEqual(seen, req) {
		t.Errorf("frontend saw\n%#v\nwant\n%#v", seen, req)
	}

	// A refusal keeps its code.
	front.mu.Lock()
	front.res, front.err = nil, api.New(codes.FailedPrecondition, "group room_id has more than 1000 shards")
	front.mu.Unlock()
	_, err = c.FanOut(ctx, api.FanOutRequest{Function: "messages:list", AllShards: true})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != codes.FailedPrecondition || ae.Msg != "group room_id has more than 1000 shards" {
		t.Errorf("refusal came back as %v", err)
	}

	// What the wire cannot carry is refused before sending.
	for _, bad := range []api.FanOutRequest{{Limit: -1}, {Concurrency: -1}, {ShardTimeout: -time.Second}, {Merge: api.MergeMode(9)}} {
		if _, err := c.FanOut(ctx, bad); api.CodeOf(err) != codes.InvalidArgument {
			t.Errorf("FanOut(%+v) = %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}

func TestFanOutRequestFromProto(t *testing.T) {
	if _, err := rpc.FanOutRequestFromProto(&lunorav1.FanOutRequest{Merge: lunorav1.FanOutRequest_Merge(7)}); api.CodeOf(err) != codes.InvalidArgument {
		t.Errorf("unknown merge: %v", err)
	}
	got, err := rpc.FanOutRequestFromProto(&lunorav1.FanOutRequest{ShardTimeoutMs: math.MaxUint64})
	if err != nil || got.ShardTimeout <= 0 || got.Merge != api.MergeConcat {
		t.Errorf("huge timeout, default merge: %+v, %v", got, err)
	}
	if _, err := rpc.FanOutResponseFromResult(nil); api.CodeOf(err) != codes.Internal {
		t.Errorf("nil result: %v", err)
	}
}
