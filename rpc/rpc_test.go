package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeShards answers Call and Exec with one row echoing its inputs, sorted
// by name, unless fail or block say otherwise.
type fakeShards struct {
	fail    error                    // returned by every method when set
	block   bool                     // wait for ctx to end, then return its error
	blocked chan<- struct{}          // told when a blocked call saw ctx end
	seen    func(shardID, fn string) // optional; called from handler goroutines
}

func (f *fakeShards) echo(ctx context.Context, shardID, name string, in map[string]any) (*api.Result, error) {
	if f.seen != nil {
		f.seen(shardID, name)
	}
	if f.block {
		<-ctx.Done()
		if f.blocked != nil {
			f.blocked <- struct{}{}
		}
		return nil, ctx.Err()
	}
	if f.fail != nil {
		return nil, f.fail
	}
	names := make([]string, 0, len(in))
	for k := range in {
		names = append(names, k)
	}
	sort.Strings(names)
	row := make([]any, len(names))
	for i, n := range names {
		row[i] = in[n]
	}
	return &api.Result{Columns: names, Rows: [][]any{row}, Seq: 42, ShardID: shardID, RowsAffected: 1}, nil
}

func (f *fakeShards) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	return f.echo(ctx, shardID, function, args)
}

func (f *fakeShards) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	return f.echo(ctx, shardID, sql, params)
}

func (f *fakeShards) Status(ctx context.Context) (*api.Status, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	return &api.Status{NodeID: "n1", NodeAddress: "127.0.0.1:1", Version: "test", ActiveShards: 2, ShardsOnDisk: 5, InFlight: 1, UptimeSeconds: 9}, nil
}

// startNode serves shards on 127.0.0.1:0 and returns a client for it.
func startNode(t *testing.T, shards rpc.Shards) *rpc.NodeClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(rpc.ServerOptions()...)
	rpc.RegisterNodeServer(srv, rpc.NewNodeServer(shards, nil))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := rpc.NewNodeClient(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNodeRoundTrip(t *testing.T) {
	var (
		mu                sync.Mutex
		gotShard, gotName string
	)
	c := startNode(t, &fakeShards{seen: func(s, n string) {
		mu.Lock()
		defer mu.Unlock()
		gotShard, gotName = s, n
	}})
	seen := func() (string, string) {
		mu.Lock()
		defer mu.Unlock()
		return gotShard, gotName
	}
	ctx := testCtx(t)

	args := map[string]any{
		"big":   int64(math.MaxInt64),
		"neg":   int64(-9007199254740993),
		"real":  2.5,
		"text":  "héllo",
		"blob":  []byte{0, 1, 2, 255},
		"empty": []byte{},
		"yes":   true,
		"null":  nil,
	}
	res, err := c.Call(ctx, "room_id=r1", "messages:send", args, api.ReadOptions{})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if s, n := seen(); s != "room_id=r1" || n != "messages:send" {
		t.Errorf("node saw shard %q function %q", s, n)
	}
	if res.Seq != 42 || res.ShardID != "room_id=r1" || res.RowsAffected != 1 {
		t.Errorf("result header = seq %d shard %q affected %d", res.Seq, res.ShardID, res.RowsAffected)
	}
	back := map[string]any{}
	for i, col := range res.Columns {
		back[col] = res.Rows[0][i]
	}
	if !reflect.DeepEqual(back, args) {
		t.Errorf("values changed in transit:\n got %#v\nwant %#v", back, args)
	}

	res, err = c.Exec(ctx, "__root__", "SELECT :n", map[string]any{"n": json.Number("12345678901234567")}, api.ReadOptions{})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if _, n := seen(); n != "SELECT :n" || res.Rows[0][0] != int64(12345678901234567) {
		t.Errorf("Exec saw %q and returned %#v", n, res.Rows)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	want := api.Status{NodeID: "n1", NodeAddress: "127.0.0.1:1", Version: "test", ActiveShards: 2, ShardsOnDisk: 5, InFlight: 1, UptimeSeconds: 9}
	if *st != want {
		t.Errorf("Status = %+v, want %+v", *st, want)
	}
}

func TestNodeErrorsKeepCodeMessageAndRetryAfter(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		code  codes.Code
		msg   string
		retry time.Duration
	}{
		{"mailbox full", &api.Error{Code: codes.ResourceExhausted, Msg: "shard room_id=r1 is busy", RetryAfter: 1500 * time.Millisecond}, codes.ResourceExhausted, "shard room_id=r1 is busy", 1500 * time.Millisecond},
		{"sandbox", api.Errorf(codes.PermissionDenied, "ATTACH is not allowed"), codes.PermissionDenied, "ATTACH is not allowed", 0},
		{"assert", api.Errorf(codes.FailedPrecondition, "a message needs a body"), codes.FailedPrecondition, "a message needs a body", 0},
		{"unknown function", api.Errorf(codes.NotFound, "unknown function %q", "x"), codes.NotFound, `unknown function "x"`, 0},
		{"wrapped", errors.Join(errors.New("context"), api.Errorf(codes.InvalidArgument, "bad arg")), codes.InvalidArgument, "bad arg", 0},
		{"uncoded", errors.New("open /var/lib/lunora/secret.db: disk I/O error"), codes.Internal, "internal error", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := startNode(t, &fakeShards{fail: tc.err})
			ctx := testCtx(t)
			for method, call := range map[string]func() error{
				"Call":   func() error { _, err := c.Call(ctx, "room_id=r1", "f", nil, api.ReadOptions{}); return err },
				"Exec":   func() error { _, err := c.Exec(ctx, "room_id=r1", "SELECT 1", nil, api.ReadOptions{}); return err },
				"Status": func() error { _, err := c.Status(ctx); return err },
			} {
				err := call()
				var ae *api.Error
				if !errors.As(err, &ae) {
					t.Fatalf("%s: error %v (%T) is not an *api.Error", method, err, err)
				}
				if ae.Code != tc.code || ae.Msg != tc.msg || ae.RetryAfter != tc.retry {
					t.Errorf("%s: got code %v msg %q retry %v, want %v %q %v", method, ae.Code, ae.Msg, ae.RetryAfter, tc.code, tc.msg, tc.retry)
				}
			}
		})
	}
}

func TestNodeHonoursDeadline(t *testing.T) {
	blocked := make(chan struct{}, 1)
	c := startNode(t, &fakeShards{block: true, blocked: blocked})
	if _, err := c.Status(testCtx(t)); err != nil { // connect first
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, "room_id=r1", "f", nil, api.ReadOptions{})
	if api.CodeOf(err) != codes.DeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v (code %v), want DEADLINE_EXCEEDED", err, api.CodeOf(err))
	}
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("the node's handler never saw its context end")
	}
}

func TestNodeUnreachableIsUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // nothing listens there now

	c, err := rpc.NewNodeClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, timeout := range []time.Duration{5 * time.Second, time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_, err = c.Call(ctx, "room_id=r1", "f", nil, api.ReadOptions{})
		cancel()
		if api.CodeOf(err) != codes.Unavailable || !strings.Contains(err.Error(), addr) {
			t.Errorf("deadline %v: err = %v (code %v), want UNAVAILABLE naming %s", timeout, err, api.CodeOf(err), addr)
		}
	}
}

func TestToStatusFromStatus(t *testing.T) {
	busy := &api.Error{Code: codes.ResourceExhausted, Msg: "busy", RetryAfter: 3 * time.Second}
	st := status.Convert(rpc.ToStatus(busy))
	if st.Code() != codes.ResourceExhausted || st.Message() != "busy" {
		t.Errorf("ToStatus = %v", st)
	}
	var info *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			info = ri
		}
	}
	if info == nil || info.GetRetryDelay().AsDuration() != 3*time.Second {
		t.Errorf("RetryInfo = %v, want 3s", info)
	}
	back := rpc.FromStatus(st.Err())
	if api.CodeOf(back) != codes.ResourceExhausted || back.Error() != "busy" || api.RetryAfterOf(back) != 3*time.Second {
		t.Errorf("FromStatus = %v (code %v, retry %v)", back, api.CodeOf(back), api.RetryAfterOf(back))
	}

	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{context.Canceled, codes.Canceled, "request canceled"},
		{context.DeadlineExceeded, codes.DeadlineExceeded, "deadline exceeded"},
		{errors.New("secret path /etc/x"), codes.Internal, "internal error"},
		{status.Error(codes.Unavailable, "node gone"), codes.Unavailable, "node gone"},
	} {
		st := status.Convert(rpc.ToStatus(tc.err))
		if st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("ToStatus(%v) = %v %q, want %v %q", tc.err, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
	if rpc.ToStatus(nil) != nil || rpc.FromStatus(nil) != nil {
		t.Error("nil must stay nil")
	}
	if err := rpc.FromStatus(status.Error(codes.Canceled, "x")); !errors.Is(err, context.Canceled) {
		t.Errorf("FromStatus(Canceled) = %v, want errors.Is context.Canceled", err)
	}
}

func TestValueConversion(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want any
	}{
		{nil, nil},
		{int64(-1), int64(-1)},
		{7, int64(7)},
		{uint64(math.MaxInt64), int64(math.MaxInt64)},
		{json.Number("9007199254740993"), int64(9007199254740993)},
		{json.Number("1.5"), 1.5},
		{float32(0.5), 0.5},
		{"s", "s"},
		{[]byte("b"), []byte("b")},
		{false, false},
	} {
		pv, err := rpc.ValueToProto(tc.in)
		if err != nil {
			t.Errorf("ValueToProto(%#v): %v", tc.in, err)
			continue
		}
		if got := rpc.ValueFromProto(pv); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("round trip of %#v = %#v, want %#v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []any{uint64(math.MaxUint64), map[string]any{}, []any{1}, struct{}{}} {
		if _, err := rpc.ValueToProto(bad); api.CodeOf(err) != codes.InvalidArgument {
			t.Errorf("ValueToProto(%#v) err = %v, want INVALID_ARGUMENT", bad, err)
		}
	}
	if rpc.ValueFromProto(nil) != nil {
		t.Error("a nil Value must be NULL")
	}
}

func (f *fakeShards) Join(ctx context.Context, req api.JoinRequest) (string, error) {
	return "leader-1", nil
}

func (f *fakeShards) RemoveNode(ctx context.Context, req api.RemoveRequest) error { return nil }

func (f *fakeShards) RegisterShard(ctx context.Context, id, owner string, forwarded bool) (bool, string, error) {
	return id == "room_id=old", owner, nil
}

func (f *fakeShards) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	return nil, api.New(codes.Unimplemented, "fake shards: no live queries")
}
