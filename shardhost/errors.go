package shardhost

import (
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// Sentinel errors. Every error the Host returns is an *api.Error carrying a
// canonical code; these sentinels are matched with errors.Is.
var (
	// ErrMailboxFull: the shard's bounded mailbox is full; retry later.
	ErrMailboxFull = &api.Error{Code: codes.ResourceExhausted, Msg: "shard is busy: its mailbox is full", RetryAfter: mailboxRetryAfter}
	// ErrOverloaded: the node is at its bound of in-flight requests.
	ErrOverloaded = &api.Error{Code: codes.ResourceExhausted, Msg: "node is at its limit of in-flight requests", RetryAfter: overloadRetryAfter}
	// ErrAssert: lunora_assert failed inside a function.
	ErrAssert = sqlitex.ErrAssert
	// ErrForeignRow: a row's shard_by value is not the shard's key (I1).
	ErrForeignRow = sqlitex.ErrForeignRow
	// ErrSandbox: the statement tried something the shard sandbox refuses.
	ErrSandbox = sqlitex.ErrSandbox
	// ErrUnknownFunction: no such function in lunora.yaml.
	ErrUnknownFunction = api.New(codes.NotFound, "unknown function")
	// ErrClosed: the host is shutting down.
	ErrClosed = api.New(codes.Unavailable, "node is shutting down")
	// ErrMigration: the shard's file cannot be migrated to lunora.yaml
	// without losing data.
	ErrMigration = api.New(codes.FailedPrecondition, "schema change refused")
	// ErrShardElsewhere: the registry holds the shard but its file is not on
	// this node; it is never created empty over the registered one (I4).
	ErrShardElsewhere = api.New(codes.Unavailable, "shard exists but is not on this node")
	// ErrResultTooLarge: a result is over the row or byte bound.
	ErrResultTooLarge = sqlitex.ErrResultTooLarge
	// ErrReadOnly: a query function tried to write.
	ErrReadOnly = sqlitex.ErrReadOnly
)

// errGlobalNotShard: a call for the global tier reached the shard host; the
// node routes those to raftglobal.
var errGlobalNotShard = api.New(codes.InvalidArgument, "the global tier is not a shard: calls on global tables are served by the global tier")
