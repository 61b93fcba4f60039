package api

import (
	"context"
	"time"
)

// RingNode is one node of the cluster as routing sees it.
type RingNode struct {
	ID       string
	Weight   int
	GRPCAddr string
	State    string // joining, up, leaving, removed (the cluster metadata's word)
	// Shards is how many registered shards the node holds (Status only).
	Shards int64
	// Alive is the liveness of the node in the answering process's gossip
	// view (Status only): "alive", "suspect", "dead", "left", or "" when
	// that process runs no gossip. The metadata's State is a record, not
	// liveness.
	Alive string
	// Raft is the node's place in the global tier's Raft configuration
	// (Status only): RaftLeader, RaftVoter, RaftNonvoter, or "" when it is
	// not a member.
	Raft string
	// InRing: shards are placed on the node at the ring's epoch (Status
	// only).
	InRing bool
}

// A node's place in the Raft configuration (RingNode.Raft).
const (
	RaftLeader   = "leader"
	RaftVoter    = "voter"
	RaftNonvoter = "nonvoter"
)

// ShardMove is one handoff stream under way: a shard's file going from
// one node to another, Bytes of Size streamed so far.
type ShardMove struct {
	ShardID  string
	From, To string
	Bytes    int64
	Size     int64
	Elapsed  time.Duration
}

// ShardLocation is where a shard lives: its owner on the ring at Epoch
// and its holder in the shard registry ("" when not registered).
type ShardLocation struct {
	ShardID    string
	Epoch      uint64
	Owner      string
	Holder     string
	Registered bool
}

// Ring is a ring epoch: the nodes shards are placed on, and every node the
// cluster metadata records.
type Ring struct {
	Epoch   uint64
	Nodes   []RingNode // the ring, by ID
	Members []RingNode // every recorded node, by ID
}

// ClusterStatus is the cluster part of Status.
type ClusterStatus struct {
	Ring          Ring
	MovesInFlight int64 // handoffs under way on the reporting node
	// Moves are the handoff streams under way on the reporting node (on a
	// gateway: on every node that answered).
	Moves []ShardMove
}

type ringEpochKey struct{}

// WithRingEpoch returns ctx carrying the ring epoch a request was routed
// with; node-bound clients send it with the request.
func WithRingEpoch(ctx context.Context, epoch uint64) context.Context {
	return context.WithValue(ctx, ringEpochKey{}, epoch)
}

// RingEpochOf returns the ring epoch ctx carries, or 0 (not routed by the
// ring).
func RingEpochOf(ctx context.Context) uint64 {
	e, _ := ctx.Value(ringEpochKey{}).(uint64)
	return e
}

// HandoffHeader opens a handoff stream: which shard, from which node, at
// which ring epoch, and how many bytes follow.
type HandoffHeader struct {
	ShardID string
	From    string
	Epoch   uint64
	Size    int64
}
