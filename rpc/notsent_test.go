package rpc_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type unavailableNode struct {
	lunorav1.UnimplementedNodeServer
}

func (unavailableNode) Call(context.Context, *lunorav1.NodeCallRequest) (*lunorav1.CallResponse, error) {
	return nil, status.Error(codes.Unavailable, "connection refused by something the node called")
}

// TestNotSentIsKnownWithoutReadingText: a call that found no connection is
// marked ErrNotSent (a mutation may go again); a call a node answered —
// even UNAVAILABLE with "connection refused" in its text — is not.
func TestNotSentIsKnownWithoutReadingText(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Nothing listens here.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	c, err := rpc.NewNodeClient(closed)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Call(ctx, "k=a", "f:g", nil, api.ReadOptions{})
	if api.CodeOf(err) != codes.Unavailable || !errors.Is(err, rpc.ErrNotSent) {
		t.Fatalf("call to a closed port: %v (not sent: %v), want UNAVAILABLE and ErrNotSent", err, errors.Is(err, rpc.ErrNotSent))
	}

	// A node that answers.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	lunorav1.RegisterNodeServer(s, unavailableNode{})
	go s.Serve(ln)
	defer s.Stop()
	c2, err := rpc.NewNodeClient(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.Call(ctx, "k=a", "f:g", nil, api.ReadOptions{})
	if api.CodeOf(err) != codes.Unavailable || errors.Is(err, rpc.ErrNotSent) {
		t.Fatalf("a node's own UNAVAILABLE answer: %v (not sent: %v), want UNAVAILABLE, sent", err, errors.Is(err, rpc.ErrNotSent))
	}
}
