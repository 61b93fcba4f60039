package api

import (
	"time"

	"google.golang.org/grpc/codes"
)

// MergeMode says how a fan-out read merges the answers of its shards.
type MergeMode int

const (
	// MergeConcat (the default) appends the shards' rows in shard ID
	// order, each shard's rows in the order it returned them.
	MergeConcat MergeMode = iota
	// MergeTopK keeps the Limit rows with the least (or, with Desc, the
	// greatest) OrderBy values across all shards.
	MergeTopK
	// MergeKeyset pages through the rows of all shards sorted by
	// (OrderBy value, shard ID), Limit rows a page, with an opaque cursor.
	MergeKeyset
)

// String is the mode's name in the HTTP API: concat, top_k or keyset.
func (m MergeMode) String() string {
	switch m {
	case MergeConcat:
		return "concat"
	case MergeTopK:
		return "top_k"
	case MergeKeyset:
		return "keyset"
	}
	return "unknown"
}

// FanOutRequest is an explicit cross-shard read: one query function of a
// shard_by group run on many shards of that group, the answers merged.
// The gateway documents the semantics (gateway.Gateway.FanOut).
type FanOutRequest struct {
	// Function is a declared query function of a shard_by group.
	Function string
	// Args are the arguments shared by every shard; the function's
	// shard_by argument is set per shard and must not be given.
	Args map[string]any
	// ShardKeys are the shard keys (values of the shard_by column) to read;
	// exactly one of ShardKeys and AllShards.
	ShardKeys []string
	// AllShards reads every registered shard of the function's group.
	AllShards bool
	Merge     MergeMode
	// OrderBy is a result column: required for MergeTopK and MergeKeyset.
	OrderBy string
	Desc    bool
	// Limit is k for MergeTopK, the page size for MergeKeyset and an
	// optional cap for MergeConcat.
	Limit int
	// Cursor continues a MergeKeyset read: the NextCursor of the previous
	// page of the same request.
	Cursor string
	// Concurrency bounds the shards asked at once; 0 means the default.
	Concurrency int
	// ShardTimeout bounds each shard's answer; 0 means the default.
	ShardTimeout time.Duration
}

// ShardFailure is a shard of a fan-out that did not answer.
type ShardFailure struct {
	ShardID string
	Code    codes.Code
	Message string
}

// FanOutResult is the merged answer of a fan-out read.
type FanOutResult struct {
	Columns []string
	Rows    [][]any
	// Shards is how many shards answered.
	Shards int
	// Failed lists every shard that did not answer, sorted by ShardID.
	Failed []ShardFailure
	// NextCursor continues a MergeKeyset read; "" when there is no
	// further page.
	NextCursor string
}
