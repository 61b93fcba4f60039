package gateway_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

var (
	_ rpc.Frontend    = (*gateway.Gateway)(nil)
	_ gateway.Backend = (*rpc.NodeClient)(nil)
)

// TestThroughNode runs HTTP → gateway → rpc.NodeClient → rpc.NodeServer →
// shards, checking that values and a retry hint survive both hops.
func TestThroughNode(t *testing.T) {
	shards := &fakeBackend{} // it has the Shards method set too
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
		<-done
	})
	node, err := rpc.NewNodeClient(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close() })

	e := newEnv(t, func(c *gateway.Config) { c.Backend = node })
	a := e.do(t, "POST", "/v1/call", `{"function": "messages:list", "args": {"room_id": "r1", "limit": 9007199254740993}}`)
	if a.status != 200 || a.raw != `{"columns":["limit","room_id"],"rows":[[9007199254740993,"r1"]],"commit_seq":7,"shard_id":"room_id=r1","rows_affected":1}`+"\n" {
		t.Errorf("got %d %s", a.status, a.raw)
	}

	shards.setAnswer(func(context.Context, backendCall) (*api.Result, error) {
		return nil, &api.Error{Code: codes.ResourceExhausted, Msg: "shard room_id=r1 is busy", RetryAfter: 3 * time.Second}
	})
	a = e.do(t, "POST", "/v1/call", `{"function": "messages:count", "args": {"room_id": "r1"}}`)
	if code, msg := a.errorOf(t); a.status != 429 || code != "RESOURCE_EXHAUSTED" || msg != "shard room_id=r1 is busy" || a.header.Get("Retry-After") != "3" {
		t.Errorf("got %d %s %q Retry-After %q", a.status, code, msg, a.header.Get("Retry-After"))
	}

	srv.Stop()
	a = e.do(t, "POST", "/v1/call", `{"function": "messages:count", "args": {"room_id": "r1"}}`)
	if code, _ := a.errorOf(t); a.status != 503 || code != "UNAVAILABLE" {
		t.Errorf("node down: got %d %s", a.status, a.raw)
	}
}
