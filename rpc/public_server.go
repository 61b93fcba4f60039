package rpc

import (
	"context"
	"io"
	"log/slog"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
)

// Frontend is what the public API serves: the gateway.
//
// Methods are called concurrently from gRPC handler goroutines, must honour
// ctx and return *api.Error values with canonical codes.
type Frontend interface {
	// Call runs a declared function. shardKey, when not empty, names the
	// shard key explicitly.
	// read applies to reads of the global tier.
	Call(ctx context.Context, function string, args map[string]any, shardKey string, read api.ReadOptions) (*api.Result, error)
	// Sql runs one admin statement on one shard ("" is the root shard,
	// "__global__" the global tier).
	Sql(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error)
	// Status reports on the serving process and what is behind it.
	Status(ctx context.Context) (*api.Status, error)
	// Subscribe starts a live query.
	Subscribe(ctx context.Context, function string, args map[string]any, shardKey string, sinceSeq uint64) (api.Stream, error)
}

// PublicServer serves the public Lunora gRPC service on top of a Frontend.
type PublicServer struct {
	lunorav1.UnimplementedLunoraServer
	front Frontend
	log   *slog.Logger
}

// NewPublicServer returns a PublicServer; a nil logger discards.
func NewPublicServer(front Frontend, logger *slog.Logger) *PublicServer {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &PublicServer{front: front, log: logger}
}

// RegisterPublicServer registers srv on s.
func RegisterPublicServer(s grpc.ServiceRegistrar, srv *PublicServer) {
	lunorav1.RegisterLunoraServer(s, srv)
}

// Call implements lunorav1.LunoraServer.
func (s *PublicServer) Call(ctx context.Context, req *lunorav1.CallRequest) (*lunorav1.CallResponse, error) {
	res, err := s.front.Call(ctx, req.GetFunction(), ArgsFromProto(req.GetArgs()), req.GetShardKey(), ReadOptionsFromProto(req.GetRead()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.Call", err)
	}
	resp, err := CallResponseFromResult(res)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.Call", err)
	}
	return resp, nil
}

// Sql implements lunorav1.LunoraServer.
func (s *PublicServer) Sql(ctx context.Context, req *lunorav1.SqlRequest) (*lunorav1.SqlResponse, error) {
	res, err := s.front.Sql(ctx, req.GetShardId(), req.GetSql(), ArgsFromProto(req.GetParams()), ReadOptionsFromProto(req.GetRead()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.Sql", err)
	}
	resp, err := SqlResponseFromResult(res)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.Sql", err)
	}
	return resp, nil
}

// Status implements lunorav1.LunoraServer.
func (s *PublicServer) Status(ctx context.Context, _ *lunorav1.StatusRequest) (*lunorav1.StatusResponse, error) {
	st, err := s.front.Status(ctx)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.Status", err)
	}
	resp, err := StatusResponseFromStatus(st)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.Status", err)
	}
	return resp, nil
}
