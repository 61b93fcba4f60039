package gateway

import (
	"errors"
	"net/http"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Sentinel errors of the gateway. Each error the gateway returns for one of
// these cases carries its own message and matches the sentinel with
// errors.Is.
var (
	// ErrUnknownFunction: the call names no function of the app.
	ErrUnknownFunction = api.New(codes.NotFound, "unknown function")
	// ErrBodyTooLarge: an HTTP request body is over Config.MaxBodyBytes
	// (HTTP 413, not 429: retrying the same body cannot succeed).
	ErrBodyTooLarge = api.New(codes.ResourceExhausted, "request body too large")
	// ErrMethodNotAllowed: an HTTP endpoint was asked with the wrong
	// method (HTTP 405).
	ErrMethodNotAllowed = api.New(codes.Unimplemented, "method not allowed")
)

// HTTPStatus is the one mapping from an error's canonical code to an HTTP
// status (grpc-gateway's table), refined only by the sentinels above.
func HTTPStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	switch api.CodeOf(err) {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		if errors.Is(err, ErrBodyTooLarge) {
			return http.StatusRequestEntityTooLarge
		}
		return http.StatusTooManyRequests
	case codes.Canceled:
		return 499 // nginx's "client closed request", as grpc-gateway
	case codes.Unimplemented:
		if errors.Is(err, ErrMethodNotAllowed) {
			return http.StatusMethodNotAllowed
		}
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
