// Package auth authenticates callers of the public API (API keys and JWT
// bearer tokens) and decides what an authenticated caller may do.
//
// The gateway authenticates every request once and carries the result,
// an *Identity, in the request's context (NewContext); the node API
// carries it on to the node that runs the function, where SQL reads it
// with lunora_auth('claim').
package auth

import (
	"context"
	"time"
)

// Role is what an API key (or a token's role claim) allows.
type Role string

const (
	// RoleAdmin may do everything, including managing API keys.
	RoleAdmin Role = "admin"
	// RoleService may call every function and run admin SQL on shards.
	RoleService Role = "service"
	// RoleClient may call only the functions that grant it (lunora.yaml
	// `auth:`), on the shards its claims allow.
	RoleClient Role = "client"
)

// Valid reports whether r is one of the roles above.
func (r Role) Valid() bool { return r == RoleAdmin || r == RoleService || r == RoleClient }

// Method says how an identity was established.
type Method string

const (
	MethodAPIKey Method = "api_key"
	MethodJWT    Method = "jwt"
	// MethodDev: authentication is off (dev mode, loopback only); the
	// caller is treated as an admin.
	MethodDev Method = "dev"
)

// Identity is an authenticated caller.
type Identity struct {
	Method Method
	Role   Role
	// Subject is the API key's ID or the token's "sub" claim.
	Subject string
	// Claims are the token's claims (JSON values: string, float64, bool,
	// []any, map[string]any, nil); for an API key {"sub": ID, "role":
	// role, "name": name}. lunora_auth('claim') reads them.
	Claims map[string]any
	// Expires is when the credential stops being valid; zero: never (an
	// API key until revoked). A live subscription ends at Expires.
	Expires time.Time
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity ctx carries, or nil.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(ctxKey{}).(*Identity)
	return id
}
