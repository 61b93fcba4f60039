package router_test

import (
	"context"
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

const globalSchema = `
tables:
  users:
    global: true
    columns: {user_id: text, name: text}
    primary_key: [user_id]
functions:
  users:register:
    kind: mutation
    global: true
    args: {user_id: text, name: text}
    sql:
      - INSERT INTO users(user_id, name) VALUES (:user_id, :name)
  users:get:
    kind: query
    global: true
    args: {user_id: text}
    sql:
      - SELECT name FROM users WHERE user_id = :user_id
`

// leaderFake is a fake node of a global tier whose leader's address is
// *leader: each names it in its answers (rpc.GlobalLeader), as a node
// does.
type leaderFake struct {
	*fakeNode
	leader *atomic.Pointer[string]
}

func (f leaderFake) GlobalLeaderAddr() string {
	if l := f.leader.Load(); l != nil {
		return *l
	}
	return ""
}

// TestGlobalWritesGoToTheLeader (issue 14): once a node has named the
// global tier's leader, the router sends global writes and strong reads
// straight to it instead of round robin through followers; bookmark reads
// still spread. When the leader stops answering, the router forgets it,
// goes through any node again, and learns the new leader from its answer.
func TestGlobalWritesGoToTheLeader(t *testing.T) {
	var leader atomic.Pointer[string]
	var nodes []leaderFake
	var addrs []string
	stops := map[string]func(){}
	for range 3 {
		f, ln := startFake(t)
		lf := leaderFake{fakeNode: f, leader: &leader}
		stops[f.addr] = serveAny(t, lf, ln)
		nodes = append(nodes, lf)
		addrs = append(addrs, f.addr)
	}
	leader.Store(&addrs[2])
	app, err := schema.Parse("lunora.yaml", []byte(globalSchema))
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Config{App: app, Seeds: addrs, RingRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	calls := func() (out [3]int64) {
		for i, n := range nodes {
			out[i] = n.calls.Load()
		}
		return out
	}
	register := func() {
		t.Helper()
		if _, err := r.Call(ctx, schema.GlobalGroup, "users:register", map[string]any{"user_id": "u", "name": "n"}, api.ReadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The first write goes to any node, which names the leader.
	register()
	before := calls()
	for range 30 {
		register()
	}
	if _, err := r.Call(ctx, schema.GlobalGroup, "users:get", map[string]any{"user_id": "u"}, api.ReadOptions{Consistency: api.Strong}); err != nil {
		t.Fatal(err)
	}
	after := calls()
	if got := after[2] - before[2]; got != 31 || after[0] != before[0] || after[1] != before[1] {
		t.Fatalf("calls per node before %v after %v: want all 30 writes and the strong read on the leader (node 3)", before, after)
	}
	// Bookmark reads are served by any replica: they still spread.
	for range 9 {
		if _, err := r.Call(ctx, schema.GlobalGroup, "users:get", map[string]any{"user_id": "u"}, api.ReadOptions{Consistency: api.Bookmark, Bookmark: 1}); err != nil {
			t.Fatal(err)
		}
	}
	spread := calls()
	if spread[0] == after[0] && spread[1] == after[1] {
		t.Fatalf("calls per node %v after 9 bookmark reads (before %v): want them spread over the nodes", spread, after)
	}

	// The leader goes away and node 1 leads. A write that finds it gone
	// fails UNAVAILABLE if it may have reached it (a mutation is not sent
	// twice) or goes to another node if it was never sent; either way the
	// router forgets the old leader, and the next write that gets through
	// learns the new one.
	stops[addrs[2]]()
	leader.Store(&addrs[0])
	for try := 0; ; try++ {
		_, err := r.Call(ctx, schema.GlobalGroup, "users:register", map[string]any{"user_id": "u", "name": "n"}, api.ReadOptions{})
		if err == nil {
			break
		}
		if api.CodeOf(err) != codes.Unavailable || try > 3 {
			t.Fatalf("write after the leader stopped: %v", err)
		}
	}
	before = calls()
	for range 10 {
		register()
	}
	after = calls()
	if got := after[0] - before[0]; got != 10 {
		t.Fatalf("calls per node before %v after %v: want the 10 writes on the new leader (node 1)", before, after)
	}
}

// serveAny is serve for a fake node with more methods than fakeNode's.
func serveAny(t *testing.T, f rpc.Shards, ln net.Listener) (stop func()) {
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
