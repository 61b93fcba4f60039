package rpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// LeaderHeader is the response header in which a node answering a call on
// the global tier names the node-API address of the tier's leader as it
// knows it: its own when it leads, the one it forwarded the call to
// otherwise. A gateway sends the next write there directly instead of
// through a follower (router: two hops become one).
const LeaderHeader = "lunora-leader"

// globalGroup is schema.GlobalGroup, the global tier's shard ID (rpc does
// not import schema, which links SQLite).
const globalGroup = "__global__"

// GlobalLeader is what a NodeServer's Shards implements to name the
// leader in LeaderHeader: the leader's node-API address, or "" when it
// does not know it.
type GlobalLeader interface {
	GlobalLeaderAddr() string
}

// LeaderHint receives the LeaderHeader of a node's answer (NodeClient.Call
// and Exec fill it when their ctx carries one: WithLeaderHint).
type LeaderHint struct {
	md metadata.MD
}

// Addr is the leader address the node named, or "".
func (h *LeaderHint) Addr() string {
	if v := h.md.Get(LeaderHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

type leaderHintKey struct{}

// WithLeaderHint returns ctx carrying h: a NodeClient call made with it
// records the leader the node names.
func WithLeaderHint(ctx context.Context, h *LeaderHint) context.Context {
	return context.WithValue(ctx, leaderHintKey{}, h)
}

// leaderHintOpts are the call options that capture the header into the
// hint ctx carries, if any.
func leaderHintOpts(ctx context.Context) []grpc.CallOption {
	if h, ok := ctx.Value(leaderHintKey{}).(*LeaderHint); ok && h != nil {
		return []grpc.CallOption{grpc.Header(&h.md)}
	}
	return nil
}

// setLeaderHeader names the global tier's leader in the answer to a call
// on the global tier.
func (s *NodeServer) setLeaderHeader(ctx context.Context, shardID string) {
	if shardID != globalGroup {
		return
	}
	if g, ok := s.shards.(GlobalLeader); ok {
		if addr := g.GlobalLeaderAddr(); addr != "" {
			// Only fails when the answer is already under way or the
			// stream is gone: then there is no one to tell.
			_ = grpc.SetHeader(ctx, metadata.Pairs(LeaderHeader, addr))
		}
	}
}
