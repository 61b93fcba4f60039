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
	// Err is the underlying cause, kept for errors.Is/As.
	Err error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Is lets errors.Is compare coded sentinels by identity of code and message,
// so a sentinel declared with New matches copies made by Wrap.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Code == e.Code && t.Msg == e.Msg
}

// New returns a coded error; use it for a package's sentinel errors.
func New(code codes.Code, msg string) *Error { return &Error{Code: code, Msg: msg} }

// Errorf returns a coded error with a formatted message. A %w verb keeps the
// wrapped error reachable through errors.Is/As.
func Errorf(code codes.Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// Wrap gives err the code and a message prefix of sentinel while keeping
// both reachable with errors.Is: errors.Is(Wrap(ErrX, "ctx", cause), ErrX).
func Wrap(sentinel *Error, detail string) *Error {
	msg := sentinel.Msg
	if detail != "" {
		msg = sentinel.Msg + ": " + detail
	}
	return &Error{Code: sentinel.Code, Msg: msg, RetryAfter: sentinel.RetryAfter, Err: sentinel}
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
