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
	// Voter is ignored: a node joins as a non-voter and the leader
	// promotes it while there are fewer voters than its target.
	Voter bool
	// Incarnation identifies the joining process (it grows with every
	// start of the node): a process that has left is refused.
	Incarnation uint64
	// Forwarded marks a request a follower passed to the leader.
	Forwarded bool
}

// RingChange adds a node to the ring (or changes its weight) or removes
// it.
type RingChange struct {
	NodeID string
	Weight int
	Remove bool
	// Incarnation is the process of the node making the change: a join
	// that a leave of the same process overtook, or a leave of a process
	// a newer one replaced, is refused. 0: an operator's change.
	Incarnation uint64
	// Forwarded marks a request a follower passed to the leader.
	Forwarded bool
}

// RemoveRequest takes a node out of the ring and the global tier.
type RemoveRequest struct {
	NodeID string
	// Force removes a voter even when the voters left would have no
	// quorum of live servers.
	Force bool
	// Incarnation is the leaving process's (a node removing itself); 0
	// for an operator's removal.
	Incarnation uint64
	// Forwarded marks a request a follower passed to the leader.
	Forwarded bool
}
