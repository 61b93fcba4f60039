package rpc

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ErrNotSent marks a failed call that never left this process: gRPC found
// no connection to carry it (refused, unresolvable, still connecting when
// the call gave up), so the node cannot have acted on it and even a
// mutation may be sent again. Test with errors.Is.
var ErrNotSent = errors.New("the request was not sent")

// notSentError keeps the gRPC status of a call that was never sent and
// says so through errors.Is(err, ErrNotSent).
type notSentError struct{ err error }

func (e *notSentError) Error() string              { return e.err.Error() }
func (e *notSentError) Unwrap() error              { return e.err }
func (e *notSentError) Is(target error) bool       { return target == ErrNotSent }
func (e *notSentError) GRPCStatus() *status.Status { s, _ := status.FromError(e.err); return s }

// markNotSent is a unary client interceptor: gRPC fills the call's peer
// only once it has a transport stream for it, so a failed call without a
// peer never reached the node. This is the signal ErrNotSent carries —
// no error text is read.
func markNotSent(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if err != nil && p.Addr == nil {
		return &notSentError{err: err}
	}
	return err
}
