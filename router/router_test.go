package router_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/router"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

const testSchema = `
tables:
  items:
    shard_by: k
    columns: {k: text, id: int, v: text}
    primary_key: [id]
functions:
  items:put:
    kind: mutation
    shard_by: k
    args: {k: text, id: int, v: text}
    sql:
      - INSERT INTO items(k, id, v) VALUES (:k, :id, :v)
  items:list:
    kind: query
    shard_by: k
    args: {k: text}
    sql:
      - SELECT id, v FROM items ORDER BY id
`

// fakeNode is a node API with a one-node ring (itself) whose shard calls
// answer what fail says for the first failures calls.
type fakeNode struct {
	id, addr string
	failures atomic.Int64
	fail     func() error
	calls    atomic.Int64
}

var errUnimplemented = api.New(codes.Unimplemented, "fake node")

func (f *fakeNode) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return nil, f.fail()
	}
	return &api.Result{ShardID: shardID, Columns: []string{"id"}, Rows: [][]any{{int64(1)}}}, nil
}

func (f *fakeNode) Exec(context.Context, string, string, map[string]any, api.ReadOptions) (*api.Result, error) {
	return nil, errUnimplemented
}

func (f *fakeNode) Status(context.Context) (*api.Status, error) {
	return &api.Status{NodeID: f.id}, nil
}

func (f *fakeNode) Join(context.Context, api.JoinRequest) (string, error) {
	return "", errUnimplemented
}
func (f *fakeNode) RemoveNode(context.Context, api.RemoveRequest) error { return errUnimplemented }
func (f *fakeNode) RegisterShard(context.Context, string, string, bool) (bool, string, error) {
	return false, "", errUnimplemented
}
func (f *fakeNode) Subscribe(context.Context, string, string, map[string]any, uint64) (api.Stream, error) {
	return nil, errUnimplemented
}

func (f *fakeNode) Ring(context.Context, uint64) (*api.Ring, error) {
	n := api.RingNode{ID: f.id, Weight: 1, GRPCAddr: f.addr, State: "up"}
	return &api.Ring{Epoch: 1, Nodes: []api.RingNode{n}, Members: []api.RingNode{n}}, nil
}

func (f *fakeNode) UpdateRing(context.Context, api.RingChange) (uint64, error) {
	return 0, errUnimplemented
}
func (f *fakeNode) MoveShard(context.Context, string, string, string, uint64, bool) (string, uint64, error) {
	return "", 0, errUnimplemented
}
func (f *fakeNode) ListShards(context.Context, string, string, string, int) ([]string, string, error) {
	return nil, "", errUnimplemented
}
func (f *fakeNode) Pull(context.Context, string, string, uint64) (uint64, error) {
	return 0, errUnimplemented
}
func (f *fakeNode) ReceiveHandoff(context.Context, api.HandoffHeader, io.Reader, []byte) error {
	return errUnimplemented
}
func (f *fakeNode) HandoffDone(context.Context, string, uint64) error { return errUnimplemented }
func (f *fakeNode) LocateShard(context.Context, string) (*api.ShardLocation, error) {
	return nil, errUnimplemented
}

// serve serves f's node API on ln until the returned stop is called.
func serve(t *testing.T, f *fakeNode, ln net.Listener) (stop func()) {
	t.Helper()
	s := grpc.NewServer(rpc.ServerOptions()...)
	rpc.RegisterNodeServer(s, rpc.NewNodeServer(f, nil))
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	var once sync.Once
	stop = func() { once.Do(func() { s.Stop(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func startFake(t *testing.T) (*fakeNode, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeNode{id: "n1", addr: ln.Addr().String()}, ln
}

func newRouter(t *testing.T, seeds ...string) *router.Router {
	t.Helper()
	app, err := schema.Parse("lunora.yaml", []byte(testSchema))
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Config{App: app, Seeds: seeds, RingRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// holderDown is what a node answers when the node it knows as a shard's
// holder cannot be reached (node.nodeDown).
func holderDown() error {
	return &api.Error{Code: codes.Unavailable, Msg: "shard k=a is held by node n4, which cannot be reached: connection refused",
		Reason: api.ReasonNodeDown, Meta: map[string]string{"shard": "k=a", "node": "n4"}}
}

// TestReadRetriedOnHolderDown (issue 10, problem 4): a query answered
// NODE_DOWN by a node (its pointer to the shard's holder was stale, or the
// holder is restarting) is tried again; a mutation is never sent twice.
func TestReadRetriedOnHolderDown(t *testing.T) {
	f, ln := startFake(t)
	f.fail = holderDown
	serve(t, f, ln)
	r := newRouter(t, f.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	f.failures.Store(2)
	res, err := r.Call(ctx, "k=a", "items:list", map[string]any{"k": "a"}, api.ReadOptions{})
	if err != nil {
		t.Fatalf("a query answered NODE_DOWN twice, then served: %v", err)
	}
	if len(res.Rows) != 1 || f.calls.Load() != 3 {
		t.Fatalf("query: %v after %d calls, want a row after 3", res, f.calls.Load())
	}

	f.calls.Store(0)
	f.failures.Store(2)
	_, err = r.Call(ctx, "k=a", "items:put", map[string]any{"k": "a", "id": 1, "v": "x"}, api.ReadOptions{})
	if r, _ := api.ReasonOf(err); r != api.ReasonNodeDown {
		t.Fatalf("a mutation answered NODE_DOWN: %v, want that answer", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("a mutation answered NODE_DOWN was sent %d times, want once", n)
	}

	// Bounded: a holder that stays down fails the read with its answer.
	f.calls.Store(0)
	f.failures.Store(1 << 30)
	_, err = r.Call(ctx, "k=a", "items:list", map[string]any{"k": "a"}, api.ReadOptions{})
	if r, _ := api.ReasonOf(err); r != api.ReasonNodeDown || f.calls.Load() < 2 || f.calls.Load() > 8 {
		t.Fatalf("a query whose holder stays down: %v after %d calls", err, f.calls.Load())
	}
}

// TestReconnectAfterRestart (issue 10, problem 5): a node that was away
// for several seconds is reached within a second of listening again (gRPC's
// default reconnect backoff had grown to several seconds by then, and calls
// failed at once with "connection refused" until its next attempt).
func TestReconnectAfterRestart(t *testing.T) {
	f, ln := startFake(t)
	stop := serve(t, f, ln)
	r := newRouter(t, f.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list := func() error {
		_, err := r.Call(ctx, "k=a", "items:list", map[string]any{"k": "a"}, api.ReadOptions{})
		return err
	}
	if err := list(); err != nil {
		t.Fatal(err)
	}
	stop()
	// Away for 8 s, with calls failing against it meanwhile (each is
	// retried by the router for about a second and a half).
	away := time.Now()
	for time.Since(away) < 8*time.Second {
		if err := list(); err == nil {
			t.Fatal("a call succeeded while the node was down")
		}
	}
	ln2, err := net.Listen("tcp", f.addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", f.addr, err)
	}
	serve(t, f, ln2)
	back := time.Now()
	// One call at a time, each a single attempt's worth of time: the
	// first that succeeds marks the reconnect.
	for {
		cctx, ccancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err := r.Call(cctx, "k=a", "items:list", map[string]any{"k": "a"}, api.ReadOptions{})
		ccancel()
		if err == nil {
			break
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatal("never reconnected")
		}
	}
	took := time.Since(back)
	t.Logf("reconnected %v after the node listened again", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("reconnected %v after the node listened again, want within 1s", took)
	}
}
