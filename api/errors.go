package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
)

// Error is an error with a canonical gRPC code and a message a user can act
// on. It is the only way a code travels from where a failure is understood
// (schema validation, the shard writer, the sandbox) to the edge, where the
// gRPC and HTTP glue turn it into a status. Nobody matches on Msg.
type Error struct {
	Code codes.Code
	Msg  string
	// RetryAfter, when non-zero, tells the caller when a retry may succeed
	// (sent as google.rpc.RetryInfo over gRPC and Retry-After over HTTP).
	RetryAfter time.Duration
	// Reason and Meta, when Reason is set, name a failure a caller acts on
	// by machine (google.rpc.ErrorInfo over gRPC): NOT_OWNER, SHARD_MOVING,
	// NODE_DOWN. Meta carries its facts (shard, owner, epoch, node).
	Reason string
	Meta   map[string]string
	// Err is the underlying cause, kept for errors.Is/As.
	Err error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// New returns a coded error; use it for a package's sentinel errors.
func New(code codes.Code, msg string) *Error { return &Error{Code: code, Msg: msg} }

// Errorf returns a coded error with a formatted message. A %w verb keeps the
// wrapped error reachable through errors.Is/As.
func Errorf(code codes.Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// Wrap gives err the code, reason and a message prefix of sentinel while keeping
// both reachable with errors.Is: errors.Is(Wrap(ErrX, "ctx", cause), ErrX).
func Wrap(sentinel *Error, detail string) *Error {
	msg := sentinel.Msg
	if detail != "" {
		msg = sentinel.Msg + ": " + detail
	}
	return &Error{Code: sentinel.Code, Msg: msg, RetryAfter: sentinel.RetryAfter, Reason: sentinel.Reason, Meta: sentinel.Meta, Err: sentinel}
}

// CodeOf returns the canonical code of err: the code of the first *Error in
// its chain, Canceled/DeadlineExceeded for context errors, Unknown otherwise.
func CodeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	return codes.Unknown
}

// RetryAfterOf returns the retry hint carried by err, or zero.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// Reasons of errors the cluster's routing acts on.
const (
	// ReasonNotOwner: the node does not own the shard at its ring epoch,
	// which is newer than the sender's; Meta has shard, owner and epoch.
	ReasonNotOwner = "NOT_OWNER"
	// ReasonShardMoving: the shard is being handed off; retry shortly.
	ReasonShardMoving = "SHARD_MOVING"
	// ReasonNodeDown: the node that holds the shard is down; Meta has
	// shard and node.
	ReasonNodeDown = "NODE_DOWN"
)

// NotOwner is the answer of a node asked for a shard it does not own at
// its ring epoch. It is UNAVAILABLE (a retry after refreshing the ring
// succeeds) with reason NOT_OWNER.
func NotOwner(shardID, owner string, epoch uint64) *Error {
	return &Error{
		Code:   codes.Unavailable,
		Msg:    fmt.Sprintf("shard %s is owned by node %s at ring epoch %d; refresh the ring and retry", shardID, owner, epoch),
		Reason: ReasonNotOwner,
		Meta:   map[string]string{"shard": shardID, "owner": owner, "epoch": fmt.Sprint(epoch)},
	}
}

// ReasonOf returns the reason of the first *Error in err's chain and its
// facts, or "".
func ReasonOf(err error) (string, map[string]string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason, e.Meta
	}
	return "", nil
}
