package api

import "time"

// Result is what a function call or an admin statement returns.
//
// Values in Rows are nil (NULL), int64, float64, string or []byte (bool
// columns come back as 0/1 integers: SQLite stores them so).
type Result struct {
	Columns      []string
	Rows         [][]any
	Seq          uint64 // the shard's commit sequence number, see shardhost
	ShardID      string
	RowsAffected int64
	// Bookmark is set by calls on the global tier: the Raft index a
	// Bookmark read must reach to see this call's effects.
	Bookmark uint64
}

// Status is what a process reports about itself.
type Status struct {
	NodeID        string
	NodeAddress   string
	Version       string
	ActiveShards  int64
	ShardsOnDisk  int64
	InFlight      int64
	UptimeSeconds int64
	// Cluster is the ring and the moves in flight; nil when the process
	// runs no cluster metadata.
	Cluster *ClusterStatus
}

// Consistency is how fresh a read of the global tier must be.
type Consistency int

const (
	// ConsistencyDefault is Strong, or Bookmark when a bookmark is given.
	ConsistencyDefault Consistency = iota
	// Strong reads are linearizable: the leader serves them after
	// confirming its leadership.
	Strong
	// Bookmark reads are served by any replica once it has applied the
	// bookmark: read-your-writes.
	Bookmark
	// Stale reads are served from the replica's local state.
	Stale
)

// ReadOptions choose the consistency of a read of the global tier; shards
// ignore them (a shard has one copy and is always current).
type ReadOptions struct {
	Consistency  Consistency
	Bookmark     uint64
	MaxStaleness time.Duration
	// Forwarded marks a call one node passed to the leader for another;
	// the leader does not forward it again.
	Forwarded bool
}

// JoinRequest asks for a node to be made a member of the global tier.
type JoinRequest struct {
	NodeID, RaftAddr, GRPCAddr string
	Voter                      bool
	// Forwarded marks a request a follower passed to the leader.
	Forwarded bool
}
