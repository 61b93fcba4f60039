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

// Shards is what a node serves (*node.Node): its shards and its replica of
// the global tier.
//
// Methods are called concurrently from gRPC handler goroutines, must honour
// ctx and return *api.Error values with canonical codes; an error without a
// code reaches the caller as a generic INTERNAL.
type Shards interface {
	// Call runs a declared function on a shard or on the global tier
	// ("__global__"). args are already typed by the gateway; the
	// implementation validates them again. read applies to global reads.
	Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error)
	// Exec runs one admin statement through the shard's writer (or the
	// global tier's log; SELECTs there are reads).
	Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error)
	// Status reports on the node.
	Status(ctx context.Context) (*api.Status, error)
	// Join makes a node a member of the global tier; RemoveNode removes one.
	Join(ctx context.Context, req api.JoinRequest) (leaderID string, err error)
	RemoveNode(ctx context.Context, req api.RemoveRequest) error
	// RegisterShard records a shard in the registry (create-if-absent).
	RegisterShard(ctx context.Context, shardID, creator string, forwarded bool) (existed bool, holder string, err error)
	// Subscribe starts a live query on a shard.
	Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error)
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

// Call implements lunorav1.NodeServer. The request's ring epoch reaches
// Shards in ctx (api.RingEpochOf), and so does its caller (auth.FromContext).
func (s *NodeServer) Call(ctx context.Context, req *lunorav1.NodeCallRequest) (*lunorav1.CallResponse, error) {
	ctx = api.WithRingEpoch(ctx, req.GetEpoch())
	ctx, err := withCaller(ctx, req.GetCaller())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Call", err)
	}
	read := ReadOptionsFromProto(req.GetRead())
	read.Forwarded = req.GetForwarded()
	res, err := s.shards.Call(ctx, req.GetShardId(), req.GetFunction(), ArgsFromProto(req.GetArgs()), read)
	s.setLeaderHeader(ctx, req.GetShardId())
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
	ctx = api.WithRingEpoch(ctx, req.GetEpoch())
	ctx, err := withCaller(ctx, req.GetCaller())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Sql", err)
	}
	read := ReadOptionsFromProto(req.GetRead())
	read.Forwarded = req.GetForwarded()
	res, err := s.shards.Exec(ctx, req.GetShardId(), req.GetSql(), ArgsFromProto(req.GetParams()), read)
	s.setLeaderHeader(ctx, req.GetShardId())
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

// Join implements lunorav1.NodeServer.
func (s *NodeServer) Join(ctx context.Context, req *lunorav1.JoinRequest) (*lunorav1.JoinResponse, error) {
	leader, err := s.shards.Join(ctx, api.JoinRequest{
		NodeID: req.GetNodeId(), RaftAddr: req.GetRaftAddr(), GRPCAddr: req.GetGrpcAddr(),
		Voter: req.GetVoter(), Incarnation: req.GetIncarnation(), Forwarded: req.GetForwarded(),
	})
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Join", err)
	}
	return &lunorav1.JoinResponse{LeaderId: leader}, nil
}

// RemoveNode implements lunorav1.NodeServer.
func (s *NodeServer) RemoveNode(ctx context.Context, req *lunorav1.RemoveNodeRequest) (*lunorav1.RemoveNodeResponse, error) {
	if err := s.shards.RemoveNode(ctx, api.RemoveRequest{NodeID: req.GetNodeId(), Force: req.GetForce(),
		Incarnation: req.GetIncarnation(), Forwarded: req.GetForwarded()}); err != nil {
		return nil, statusFor(ctx, s.log, "Node.RemoveNode", err)
	}
	return &lunorav1.RemoveNodeResponse{}, nil
}

// RegisterShard implements lunorav1.NodeServer.
func (s *NodeServer) RegisterShard(ctx context.Context, req *lunorav1.RegisterShardRequest) (*lunorav1.RegisterShardResponse, error) {
	existed, holder, err := s.shards.RegisterShard(ctx, req.GetShardId(), req.GetHolder(), req.GetForwarded())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.RegisterShard", err)
	}
	return &lunorav1.RegisterShardResponse{Existed: existed, Holder: holder}, nil
}

// statusFor logs what the caller will only see as INTERNAL, then converts.
func statusFor(ctx context.Context, log *slog.Logger, method string, err error) error {
	switch api.CodeOf(err) {
	case codes.Unknown, codes.Internal, codes.DataLoss:
		log.ErrorContext(ctx, "request failed", "method", method, "err", err)
	}
	return ToStatus(err)
}
