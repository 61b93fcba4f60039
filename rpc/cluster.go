package rpc

import (
	"context"
	"errors"
	"io"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Cluster is the cluster half of the node API (*node.Node): the ring, the
// shard registry and handoffs. A NodeServer whose Shards do not implement
// it answers these methods UNIMPLEMENTED.
type Cluster interface {
	Ring(ctx context.Context, minEpoch uint64) (*api.Ring, error)
	UpdateRing(ctx context.Context, req api.RingChange) (uint64, error)
	MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64, forwarded bool) (holder string, index uint64, err error)
	ListShards(ctx context.Context, group, holder, after string, limit int) ([]string, string, error)
	Pull(ctx context.Context, shardID, to string, epoch uint64) (uint64, error)
	ReceiveHandoff(ctx context.Context, h api.HandoffHeader, r io.Reader, sum []byte) error
	HandoffDone(ctx context.Context, shardID string, index uint64) error
	LocateShard(ctx context.Context, shardID string) (*api.ShardLocation, error)
}

// handoffChunk is the size of the data chunks of a handoff stream.
const handoffChunk = 256 << 10

func (s *NodeServer) cluster() (Cluster, error) {
	c, ok := s.shards.(Cluster)
	if !ok {
		return nil, ToStatus(api.New(codes.Unimplemented, "this node runs no cluster"))
	}
	return c, nil
}

// Ring implements lunorav1.NodeServer.
func (s *NodeServer) Ring(ctx context.Context, req *lunorav1.RingRequest) (*lunorav1.RingResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	r, err := c.Ring(ctx, req.GetMinEpoch())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Ring", err)
	}
	return RingToProto(r), nil
}

// RingToProto converts a ring epoch.
func RingToProto(r *api.Ring) *lunorav1.RingResponse {
	conv := func(ns []api.RingNode) []*lunorav1.RingNode {
		out := make([]*lunorav1.RingNode, len(ns))
		for i, n := range ns {
			out[i] = &lunorav1.RingNode{Id: n.ID, Weight: int32(n.Weight), GrpcAddr: n.GRPCAddr, State: n.State}
		}
		return out
	}
	return &lunorav1.RingResponse{Epoch: r.Epoch, Nodes: conv(r.Nodes), Members: conv(r.Members)}
}

// RingFromProto converts a ring epoch back.
func RingFromProto(m *lunorav1.RingResponse) *api.Ring {
	conv := func(ns []*lunorav1.RingNode) []api.RingNode {
		out := make([]api.RingNode, len(ns))
		for i, n := range ns {
			out[i] = api.RingNode{ID: n.GetId(), Weight: int(n.GetWeight()), GRPCAddr: n.GetGrpcAddr(), State: n.GetState()}
		}
		return out
	}
	return &api.Ring{Epoch: m.GetEpoch(), Nodes: conv(m.GetNodes()), Members: conv(m.GetMembers())}
}

// UpdateRing implements lunorav1.NodeServer.
func (s *NodeServer) UpdateRing(ctx context.Context, req *lunorav1.UpdateRingRequest) (*lunorav1.UpdateRingResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	e, err := c.UpdateRing(ctx, api.RingChange{NodeID: req.GetNodeId(), Weight: int(req.GetWeight()), Remove: req.GetRemove(),
		Incarnation: req.GetIncarnation(), Forwarded: req.GetForwarded()})
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.UpdateRing", err)
	}
	return &lunorav1.UpdateRingResponse{Epoch: e}, nil
}

// MoveShard implements lunorav1.NodeServer.
func (s *NodeServer) MoveShard(ctx context.Context, req *lunorav1.MoveShardRequest) (*lunorav1.MoveShardResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	holder, idx, err := c.MoveShard(ctx, req.GetShardId(), req.GetFromNode(), req.GetToNode(), req.GetToIncarnation(), req.GetForwarded())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.MoveShard", err)
	}
	return &lunorav1.MoveShardResponse{Holder: holder, Index: idx}, nil
}

// ListShards implements lunorav1.NodeServer.
func (s *NodeServer) ListShards(ctx context.Context, req *lunorav1.ListShardsRequest) (*lunorav1.ListShardsResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	ids, next, err := c.ListShards(ctx, req.GetGroup(), req.GetHolder(), req.GetAfter(), int(req.GetLimit()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.ListShards", err)
	}
	return &lunorav1.ListShardsResponse{ShardIds: ids, Next: next}, nil
}

// Pull implements lunorav1.NodeServer.
func (s *NodeServer) Pull(ctx context.Context, req *lunorav1.PullRequest) (*lunorav1.PullResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	idx, err := c.Pull(ctx, req.GetShardId(), req.GetToNode(), req.GetEpoch())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.Pull", err)
	}
	return &lunorav1.PullResponse{Index: idx}, nil
}

// HandoffDone implements lunorav1.NodeServer.
func (s *NodeServer) HandoffDone(ctx context.Context, req *lunorav1.HandoffDoneRequest) (*lunorav1.HandoffDoneResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	if err := c.HandoffDone(ctx, req.GetShardId(), req.GetIndex()); err != nil {
		return nil, statusFor(ctx, s.log, "Node.HandoffDone", err)
	}
	return &lunorav1.HandoffDoneResponse{}, nil
}

// LocateShard implements lunorav1.NodeServer.
func (s *NodeServer) LocateShard(ctx context.Context, req *lunorav1.LocateShardRequest) (*lunorav1.LocateShardResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	loc, err := c.LocateShard(ctx, req.GetShardId())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.LocateShard", err)
	}
	return &lunorav1.LocateShardResponse{ShardId: loc.ShardID, RingEpoch: loc.Epoch, Owner: loc.Owner, Holder: loc.Holder, Registered: loc.Registered}, nil
}

// Handoff implements lunorav1.NodeServer: the first chunk is the header
// (with the file's size and SHA-256, which the sender computed when it
// froze the shard), the file's bytes follow.
func (s *NodeServer) Handoff(stream grpc.ClientStreamingServer[lunorav1.HandoffChunk, lunorav1.HandoffAck]) error {
	ctx := stream.Context()
	c, err := s.cluster()
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return ToStatus(api.Errorf(codes.InvalidArgument, "handoff: no header: %v", err))
	}
	h := api.HandoffHeader{ShardID: first.GetShardId(), From: first.GetFromNode(), Epoch: first.GetEpoch(), Size: first.GetSize()}
	r := &chunkReader{stream: stream, buf: first.GetData()}
	if err := c.ReceiveHandoff(ctx, h, r, first.GetSha256()); err != nil {
		return statusFor(ctx, s.log, "Node.Handoff", err)
	}
	return stream.SendAndClose(&lunorav1.HandoffAck{})
}

// chunkReader reads the data of a handoff stream.
type chunkReader struct {
	stream grpc.ClientStreamingServer[lunorav1.HandoffChunk, lunorav1.HandoffAck]
	buf    []byte
	eof    bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		m, err := r.stream.Recv()
		if err == io.EOF {
			r.eof = true
			continue
		}
		if err != nil {
			return 0, err
		}
		r.buf = m.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Ring asks the node for its newest ring epoch (at least minEpoch).
func (c *NodeClient) Ring(ctx context.Context, minEpoch uint64) (*api.Ring, error) {
	resp, err := c.node.Ring(ctx, &lunorav1.RingRequest{MinEpoch: minEpoch})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return RingFromProto(resp), nil
}

// UpdateRing asks the node to add, reweigh or remove a ring node.
func (c *NodeClient) UpdateRing(ctx context.Context, req api.RingChange) (uint64, error) {
	resp, err := c.node.UpdateRing(ctx, &lunorav1.UpdateRingRequest{NodeId: req.NodeID, Weight: int32(req.Weight), Remove: req.Remove,
		Incarnation: req.Incarnation, Forwarded: req.Forwarded})
	if err != nil {
		return 0, c.fromStatus(err)
	}
	return resp.GetEpoch(), nil
}

// MoveShard asks the node to change a shard's holder in the registry.
func (c *NodeClient) MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64, forwarded bool) (string, uint64, error) {
	resp, err := c.node.MoveShard(ctx, &lunorav1.MoveShardRequest{ShardId: shardID, FromNode: from, ToNode: to, ToIncarnation: toIncarnation, Forwarded: forwarded})
	if err != nil {
		return "", 0, c.fromStatus(err)
	}
	return resp.GetHolder(), resp.GetIndex(), nil
}

// ListShards pages through the node's replica of the shard registry.
func (c *NodeClient) ListShards(ctx context.Context, group, holder, after string, limit int) ([]string, string, error) {
	resp, err := c.node.ListShards(ctx, &lunorav1.ListShardsRequest{Group: group, Holder: holder, After: after, Limit: int32(limit)})
	if err != nil {
		return nil, "", c.fromStatus(err)
	}
	return resp.GetShardIds(), resp.GetNext(), nil
}

// Pull asks the node holding a shard to hand it to node to.
func (c *NodeClient) Pull(ctx context.Context, shardID, to string, epoch uint64) (uint64, error) {
	resp, err := c.node.Pull(ctx, &lunorav1.PullRequest{ShardId: shardID, ToNode: to, Epoch: epoch})
	if err != nil {
		return 0, c.fromStatus(err)
	}
	return resp.GetIndex(), nil
}

// LocateShard asks the node where a shard lives: its owner on the ring
// and its holder in the registry.
func (c *NodeClient) LocateShard(ctx context.Context, shardID string) (*api.ShardLocation, error) {
	resp, err := c.node.LocateShard(ctx, &lunorav1.LocateShardRequest{ShardId: shardID})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return &api.ShardLocation{ShardID: resp.GetShardId(), Epoch: resp.GetRingEpoch(), Owner: resp.GetOwner(), Holder: resp.GetHolder(), Registered: resp.GetRegistered()}, nil
}

// HandoffDone tells the receiver of a handoff that it committed.
func (c *NodeClient) HandoffDone(ctx context.Context, shardID string, index uint64) error {
	if _, err := c.node.HandoffDone(ctx, &lunorav1.HandoffDoneRequest{ShardId: shardID, Index: index}); err != nil {
		return c.fromStatus(err)
	}
	return nil
}

// Handoff streams a shard's file to the node: the header, then r's bytes.
func (c *NodeClient) Handoff(ctx context.Context, h api.HandoffHeader, r io.Reader, sum []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.node.Handoff(ctx)
	if err != nil {
		return c.fromStatus(err)
	}
	if err := stream.Send(&lunorav1.HandoffChunk{ShardId: h.ShardID, FromNode: h.From, Epoch: h.Epoch, Size: h.Size, Sha256: sum}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return c.fromStatus(errors.Join(rerr, err))
	}
	buf := make([]byte, handoffChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := stream.Send(&lunorav1.HandoffChunk{Data: buf[:n]}); err != nil {
				// The receiver ended the stream; its status says why.
				_, err = stream.CloseAndRecv()
				return c.fromStatus(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return api.Errorf(codes.Internal, "handoff of shard %s: read: %v", h.ShardID, rerr)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return c.fromStatus(err)
	}
	return nil
}
