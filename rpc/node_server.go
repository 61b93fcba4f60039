package rpc

import (
	"context"
	"io"
	"log/slog"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Shards is what a node serves: the shard runtime (*shardhost.Host).
//
// Methods are called concurrently from gRPC handler goroutines, must honour
// ctx and return *api.Error values with canonical codes; an error without a
// code reaches the caller as a generic INTERNAL.
type Shards interface {
	// Call runs a declared function on a shard. args are already typed by
	// the gateway; the implementation validates them again.
	Call(ctx context.Context, shardID, function string, args map[string]any) (*api.Result, error)
	// Exec runs one admin statement through the shard's writer.
	Exec(ctx context.Context, shardID, sql string, params map[string]any) (*api.Result, error)
	// Status reports on the node.
	Status(ctx context.Context) (*api.Status, error)
}

// NodeServer serves the Node gRPC service on top of Shards.
type NodeServer struct {
	lunorav1.UnimplementedNodeServer
	shards Shards
	log    *slog.Logger
}

// NewNodeServer returns a NodeServer; a nil logger discards. Errors without
// a code are logged there before being answered as INTERNAL.
func NewNodeServer(shards Shards, logger *slog.Logger) *NodeServer {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &NodeServer{shards: shards, log: logger}
}

// RegisterNodeServer registers srv on s.
func RegisterNodeServer(s grpc.ServiceRegistrar, srv *NodeServer) {
	lunorav1.RegisterNodeServer(s, srv)
}

// Call implements lunorav1.NodeServer. The epoch is not checked until the
// ring exists; every sender uses 0.
func (s *NodeServer) Call(ctx context.Context, req *lunorav1.NodeCallRequest) (*lunorav1.CallResponse, error) {
	res, err := s.shards.Call(ctx, req.GetShardId(), req.GetFunction(), ArgsFromProto(req.GetArgs()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Call", err)
	}
	resp, err := CallResponseFromResult(res)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Call", err)
	}
	return resp, nil
}

// Sql implements lunorav1.NodeServer.
func (s *NodeServer) Sql(ctx context.Context, req *lunorav1.NodeSqlRequest) (*lunorav1.SqlResponse, error) {
	res, err := s.shards.Exec(ctx, req.GetShardId(), req.GetSql(), ArgsFromProto(req.GetParams()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Sql", err)
	}
	resp, err := SqlResponseFromResult(res)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Sql", err)
	}
	return resp, nil
}

// Status implements lunorav1.NodeServer.
func (s *NodeServer) Status(ctx context.Context, _ *lunorav1.StatusRequest) (*lunorav1.StatusResponse, error) {
	st, err := s.shards.Status(ctx)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Status", err)
	}
	resp, err := StatusResponseFromStatus(st)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Status", err)
	}
	return resp, nil
}

// statusFor logs what the caller will only see as INTERNAL, then converts.
func statusFor(ctx context.Context, log *slog.Logger, method string, err error) error {
	switch api.CodeOf(err) {
	case codes.Unknown, codes.Internal, codes.DataLoss:
		log.ErrorContext(ctx, "request failed", "method", method, "err", err)
	}
	return ToStatus(err)
}
