package node

import (
	"context"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/raftglobal"
	"google.golang.org/grpc/codes"
)

// Global is the global tier as a Node uses it: *raftglobal.Store satisfies
// it. Its methods are safe for concurrent use. Writes (Write, AddServer,
// SetNodeState*, RemoveWith, MarkNode, RegisterShard, MoveShard,
// ChangeRing) run on the leader only and answer a *raftglobal.NotLeaderError
// elsewhere (the Node forwards them: forwardToLeader); the reads of the
// metadata (Ring, Nodes, ShardHolder, HeldShards, ShardsPerHolder,
// ListShards) read this node's replica and may lag the leader. Every
// method that takes a ctx honours it.
type Global interface {
	// Write runs a command through the Raft log; Read serves a read at the
	// consistency asked for.
	Write(ctx context.Context, cmd raftglobal.Command) (*api.Result, error)
	Read(ctx context.Context, opts api.ReadOptions, cmd raftglobal.Command) (*api.Result, error)

	// IsLeader reports whether this member leads now; NotLeader is the
	// error naming the leader this member knows; Leader is its ID and
	// Raft address; Addr is this member's Raft address; Servers is the
	// Raft configuration as this member has it.
	IsLeader() bool
	NotLeader() *raftglobal.NotLeaderError
	Leader() (id, addr string)
	Addr() string
	Servers() ([]raftglobal.Member, error)

	// Membership of the Raft group and the node records.
	AddServer(ctx context.Context, id, addr string, incarnation uint64) error
	RemoveWith(ctx context.Context, id string, opts raftglobal.RemoveOptions) error
	Nodes(ctx context.Context) ([]raftglobal.NodeInfo, error)
	SetNodeState(ctx context.Context, n raftglobal.NodeInfo) error
	SetNodeStateFor(ctx context.Context, n raftglobal.NodeInfo, incarnation uint64) (stale bool, err error)
	MarkNode(ctx context.Context, id, state string) error

	// The ring's epochs.
	Ring(ctx context.Context) (uint64, []raftglobal.RingNode, error)
	ChangeRing(ctx context.Context, expect uint64, nodes []raftglobal.RingNode, op raftglobal.RingOp) (epoch uint64, created, stale bool, err error)

	// The shard registry: which shards exist and which node holds each.
	RegisterShard(ctx context.Context, shardID, creator string) (existed bool, holder string, index uint64, err error)
	MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64) (holder string, index uint64, err error)
	NodeIncarnation(ctx context.Context, id string) (uint64, error)
	WaitApplied(ctx context.Context, index uint64) error
	ShardHolder(ctx context.Context, shardID string) (holder string, exists bool, err error)
	HeldShards(ctx context.Context, holder, after string, limit int) (ids []string, next string, err error)
	ShardsPerHolder(ctx context.Context) (map[string]int64, error)
	ListShards(ctx context.Context, group, after string, limit int) (ids []string, next string, err error)

	// API keys (keys.go): PutKey and RevokeKey write (leader only),
	// LookupKey and Keys read this replica.
	PutKey(ctx context.Context, k raftglobal.APIKey) (raftglobal.APIKey, error)
	RevokeKey(ctx context.Context, id string) (raftglobal.APIKey, error)
	LookupKey(ctx context.Context, id string, maxStaleness time.Duration) (*raftglobal.APIKey, error)
	Keys(ctx context.Context, limit int) (keys []raftglobal.APIKey, more bool, err error)
}

var _ Global = (*raftglobal.Store)(nil)

// forwardToLeader passes a request this member of the global tier cannot
// serve (notLeader, a *raftglobal.NotLeaderError) to the leader's node,
// once: a request that was itself forwarded (forwarded) is not passed on
// again — leadership moved while it travelled, and the caller retries
// (UNAVAILABLE). what names the request in that error.
func forwardToLeader[T any](ctx context.Context, n *Node, notLeader error, forwarded bool, what string, call func(Peer) (T, error)) (T, error) {
	var zero T
	if forwarded {
		return zero, api.Errorf(codes.Unavailable, "global tier: leadership moved while %s was being forwarded; retry", what)
	}
	p, err := n.leaderPeer(ctx, notLeader)
	if err != nil {
		return zero, err
	}
	return call(p)
}
