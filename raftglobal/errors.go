package raftglobal

import (
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// Sentinel errors. Every error the Store returns is an *api.Error carrying a
// canonical code (or a *NotLeaderError, which unwraps to one); match them
// with errors.Is, never on the message.
var (
	// ErrNotLeader: the operation needs the Raft leader and this node is not
	// it. The error is a *NotLeaderError naming the leader, if known.
	ErrNotLeader = api.New(codes.Unavailable, "not the Raft leader")
	// ErrNoLeader: no leader was elected within the time allowed (no quorum,
	// or an election is under way).
	ErrNoLeader = api.New(codes.Unavailable, "the global tier has no Raft leader")
	// ErrTimeout: a write was not committed in time; it may or may not be
	// applied later.
	ErrTimeout = api.New(codes.Unavailable, "global write not committed in time")
	// ErrLeadershipLost: leadership was lost while a write was in flight; it
	// may or may not be applied.
	ErrLeadershipLost = api.New(codes.Unavailable, "leadership lost while the write was in flight")
	// ErrBookmarkNotApplied: this replica has not applied the bookmark's
	// index in time; retry, or read on the leader.
	ErrBookmarkNotApplied = api.New(codes.Unavailable, "bookmark not yet applied on this replica")
	// ErrFutureBookmark: the bookmark is beyond every index this node knows
	// of; it did not come from this cluster's log.
	ErrFutureBookmark = api.New(codes.FailedPrecondition, "bookmark from the future")
	// ErrTooStale: a stale read with a freshness bound on a replica that has
	// not heard from the leader within the bound.
	ErrTooStale = api.New(codes.Unavailable, "replica is too stale for the read's freshness bound")
	// ErrNonDeterministic: the SQL uses a clock the replicas would not agree
	// on; use lunora_now().
	ErrNonDeterministic = api.New(codes.InvalidArgument, "non-deterministic SQL")
	// ErrBusy: too many Writes are queued on the leader.
	ErrBusy = &api.Error{Code: codes.ResourceExhausted, Msg: "global tier is busy: too many writes queued", RetryAfter: busyRetryAfter}
	// ErrNotInRing: a node that is not in the newest ring epoch (it left)
	// cannot create a shard; its owner at that epoch does.
	ErrNotInRing = &api.Error{Code: codes.Unavailable, Msg: "the node is not in the newest ring epoch", Reason: api.ReasonNotOwner, RetryAfter: 50 * time.Millisecond}
	// ErrClosed: the store is shut down.
	ErrClosed = api.New(codes.Unavailable, "global tier is shutting down")
	// ErrSandbox: user SQL tried something the sandbox refuses.
	ErrSandbox = sqlitex.ErrSandbox
	// ErrAssert: lunora_assert failed.
	ErrAssert = sqlitex.ErrAssert
	// ErrResultTooLarge: a result is over the row or byte bound.
	ErrResultTooLarge = sqlitex.ErrResultTooLarge
	// ErrReadOnly: a read tried to write.
	ErrReadOnly = sqlitex.ErrReadOnly
)

// NotLeaderError is returned by leader-only operations on a follower. It
// names the leader this node knows of (both empty when it knows none), so
// the node layer can forward the request. errors.Is(err, ErrNotLeader)
// holds; its canonical code is UNAVAILABLE.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string // the leader's Raft address
	err        *api.Error
}

func newNotLeader(id, addr string) *NotLeaderError {
	detail := "no leader is known"
	if id != "" {
		detail = "the leader is " + id + " at " + addr
	}
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr, err: api.Wrap(ErrNotLeader, detail)}
}

func (e *NotLeaderError) Error() string {
	if e == nil || e.err == nil {
		return ErrNotLeader.Msg
	}
	return e.err.Error()
}

// Unwrap returns the coded error, which wraps ErrNotLeader.
func (e *NotLeaderError) Unwrap() error {
	if e == nil || e.err == nil {
		return ErrNotLeader
	}
	return e.err
}
