package auth

import (
	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

// Errors of this package. Authentication failures are UNAUTHENTICATED,
// authorization failures PERMISSION_DENIED; each is wrapped (api.Wrap) with
// the detail a caller can act on, so errors.Is finds the sentinel.
var (
	// ErrNoCredential: the request carries no credential.
	ErrNoCredential = api.New(codes.Unauthenticated, "authentication required: send \"Authorization: Bearer <API key or token>\"")
	// ErrBadCredential: the credential is malformed, unknown, revoked or
	// expired, or its signature or claims do not check out.
	ErrBadCredential = api.New(codes.Unauthenticated, "invalid credential")
	// ErrPermissionDenied: the caller is authenticated but not allowed.
	ErrPermissionDenied = api.New(codes.PermissionDenied, "permission denied")
)
