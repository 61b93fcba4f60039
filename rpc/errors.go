package rpc

import (
	"context"
	"errors"

	"github.com/lunora/lunora/api"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// internalMsg is all a caller learns about an error that carries no code:
// its text may name files, addresses or SQL and is logged instead.
const internalMsg = "internal error"

// ToStatus converts an error of the request path to a gRPC status error.
//
//   - An *api.Error anywhere in the chain gives its code and message, and a
//     google.rpc.RetryInfo detail when it carries a RetryAfter.
//   - context.Canceled and context.DeadlineExceeded give Canceled and
//     DeadlineExceeded.
//   - An error that already is a gRPC status keeps its code and message.
//   - Anything else is Internal with a generic message; log it before.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		code := ae.Code
		if code == codes.OK {
			return status.Error(codes.Internal, internalMsg)
		}
		st := status.New(code, ae.Msg)
		if ae.RetryAfter > 0 {
			if withInfo, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(ae.RetryAfter)}); derr == nil {
				st = withInfo
			}
		}
		if ae.Reason != "" {
			if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: ae.Reason, Domain: "lunora", Metadata: ae.Meta}); derr == nil {
				st = withInfo
			}
		}
		return st.Err()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		// Use the status itself, not err.Error(), which may carry the text
		// of whatever wrapped it.
		if st := gs.GRPCStatus(); st != nil && st.Code() != codes.OK {
			return st.Err()
		}
	}
	return status.Error(codes.Internal, internalMsg)
}

// FromStatus turns an error returned by a gRPC client call into an
// *api.Error with the status's code, message and RetryInfo delay, so that
// ToStatus at the next hop sends the same status on. Canceled and
// DeadlineExceeded keep context.Canceled and context.DeadlineExceeded
// reachable with errors.Is. An error that is not a status at all (a
// transport failure outside gRPC's own reporting) is UNAVAILABLE.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		switch {
		case errors.Is(err, context.Canceled):
			return &api.Error{Code: codes.Canceled, Msg: "request canceled", Err: context.Canceled}
		case errors.Is(err, context.DeadlineExceeded):
			return &api.Error{Code: codes.DeadlineExceeded, Msg: "deadline exceeded", Err: context.DeadlineExceeded}
		}
		return &api.Error{Code: codes.Unavailable, Msg: err.Error(), Err: err}
	}
	e := &api.Error{Code: st.Code(), Msg: st.Message(), Err: err}
	switch st.Code() {
	case codes.OK:
		e.Code, e.Msg = codes.Internal, internalMsg
	case codes.Canceled:
		e.Err = context.Canceled
	case codes.DeadlineExceeded:
		e.Err = context.DeadlineExceeded
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			if delay := d.GetRetryDelay().AsDuration(); delay > 0 {
				e.RetryAfter = delay
			}
		case *errdetails.ErrorInfo:
			if d.GetDomain() == "lunora" {
				e.Reason, e.Meta = d.GetReason(), d.GetMetadata()
			}
		}
	}
	return e
}
