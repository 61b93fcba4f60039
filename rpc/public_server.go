package rpc

import (
	"context"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
	// FanOut runs a query function on many shards of its group and merges
	// the answers; shards that fail are listed in the result.
	FanOut(ctx context.Context, req api.FanOutRequest) (*api.FanOutResult, error)
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

// FanOut implements lunorav1.LunoraServer.
func (s *PublicServer) FanOut(ctx context.Context, req *lunorav1.FanOutRequest) (*lunorav1.FanOutResponse, error) {
	freq, err := FanOutRequestFromProto(req)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.FanOut", err)
	}
	res, err := s.front.FanOut(ctx, freq)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.FanOut", err)
	}
	resp, err := FanOutResponseFromResult(res)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Lunora.FanOut", err)
	}
	return resp, nil
}

// FanOutRequestFromProto converts a fan-out request; an unknown merge mode
// is INVALID_ARGUMENT. Bounds are the gateway's to check.
func FanOutRequestFromProto(m *lunorav1.FanOutRequest) (api.FanOutRequest, error) {
	out := api.FanOutRequest{
		Function:    m.GetFunction(),
		Args:        ArgsFromProto(m.GetArgs()),
		ShardKeys:   m.GetShardKeys(),
		AllShards:   m.GetAllShards(),
		OrderBy:     m.GetOrderBy(),
		Desc:        m.GetDesc(),
		Limit:       int(m.GetLimit()),
		Cursor:      m.GetCursor(),
		Concurrency: int(m.GetConcurrency()),
	}
	const maxMS = uint64(math.MaxInt64 / int64(time.Millisecond))
	out.ShardTimeout = time.Duration(min(m.GetShardTimeoutMs(), maxMS)) * time.Millisecond
	switch m.GetMerge() {
	case lunorav1.FanOutRequest_MERGE_UNSPECIFIED, lunorav1.FanOutRequest_CONCAT:
		out.Merge = api.MergeConcat
	case lunorav1.FanOutRequest_TOP_K:
		out.Merge = api.MergeTopK
	case lunorav1.FanOutRequest_KEYSET:
		out.Merge = api.MergeKeyset
	default:
		return out, api.Errorf(codes.InvalidArgument, "merge must be CONCAT, TOP_K or KEYSET, not %d", int32(m.GetMerge()))
	}
	return out, nil
}

// FanOutRequestToProto converts a fan-out request for the wire; values
// the wire cannot carry (a negative limit, say) are INVALID_ARGUMENT. A
// shard timeout is rounded up to whole milliseconds.
func FanOutRequestToProto(r api.FanOutRequest) (*lunorav1.FanOutRequest, error) {
	args, err := ArgsToProto(r.Args)
	if err != nil {
		return nil, err
	}
	switch {
	case r.Limit < 0 || int64(r.Limit) > math.MaxUint32:
		return nil, api.Errorf(codes.InvalidArgument, "limit %d is out of range", r.Limit)
	case r.Concurrency < 0 || int64(r.Concurrency) > math.MaxUint32:
		return nil, api.Errorf(codes.InvalidArgument, "concurrency %d is out of range", r.Concurrency)
	case r.ShardTimeout < 0:
		return nil, api.Errorf(codes.InvalidArgument, "shard timeout must not be negative, got %s", r.ShardTimeout)
	}
	out := &lunorav1.FanOutRequest{
		Function:       r.Function,
		Args:           args,
		ShardKeys:      r.ShardKeys,
		AllShards:      r.AllShards,
		OrderBy:        r.OrderBy,
		Desc:           r.Desc,
		Limit:          uint32(r.Limit),
		Cursor:         r.Cursor,
		Concurrency:    uint32(r.Concurrency),
		ShardTimeoutMs: uint64((r.ShardTimeout + time.Millisecond - 1) / time.Millisecond),
	}
	switch r.Merge {
	case api.MergeConcat:
		out.Merge = lunorav1.FanOutRequest_CONCAT
	case api.MergeTopK:
		out.Merge = lunorav1.FanOutRequest_TOP_K
	case api.MergeKeyset:
		out.Merge = lunorav1.FanOutRequest_KEYSET
	default:
		return nil, api.Errorf(codes.InvalidArgument, "merge must be concat, top_k or keyset (got mode %d)", int(r.Merge))
	}
	return out, nil
}

// FanOutResponseFromResult converts a fan-out's merged answer.
func FanOutResponseFromResult(r *api.FanOutResult) (*lunorav1.FanOutResponse, error) {
	if r == nil {
		return nil, api.New(codes.Internal, "internal error: no result")
	}
	rows, err := rowsToProto(r.Rows)
	if err != nil {
		return nil, err
	}
	out := &lunorav1.FanOutResponse{
		Columns:    r.Columns,
		Rows:       rows,
		Shards:     uint32(r.Shards),
		NextCursor: r.NextCursor,
	}
	for _, f := range r.Failed {
		out.Failed = append(out.Failed, &lunorav1.ShardFailure{ShardId: f.ShardID, Code: uint32(f.Code), Message: f.Message})
	}
	return out, nil
}

// FanOutResultFromResponse converts a fan-out's answer back; Failed is
// never nil.
func FanOutResultFromResponse(m *lunorav1.FanOutResponse) *api.FanOutResult {
	out := &api.FanOutResult{
		Columns:    m.GetColumns(),
		Rows:       rowsFromProto(m.GetRows()),
		Shards:     int(m.GetShards()),
		Failed:     make([]api.ShardFailure, 0, len(m.GetFailed())),
		NextCursor: m.GetNextCursor(),
	}
	for _, f := range m.GetFailed() {
		out.Failed = append(out.Failed, api.ShardFailure{ShardID: f.GetShardId(), Code: codes.Code(f.GetCode()), Message: f.GetMessage()})
	}
	return out
}
