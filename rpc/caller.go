package rpc

import (
	"context"
	"encoding/json"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc/codes"
)

// The caller's identity travels with every request the node API runs for
// a public API caller (Call, Sql, Subscribe): the gateway authenticated it
// and put it in the request's context (auth.NewContext); NodeClient sends
// what the context carries and NodeServer puts it back into the context
// the node runs the request with, so a request forwarded from node to node
// keeps it and the function sees its caller (lunora_auth()). The node API
// itself is for cluster members only: a node believes the identity it is
// sent.

// CallerToProto converts an identity for the wire (nil → nil).
func CallerToProto(id *auth.Identity) (*lunorav1.Caller, error) {
	if id == nil {
		return nil, nil
	}
	out := &lunorav1.Caller{Method: string(id.Method), Role: string(id.Role), Subject: id.Subject}
	if len(id.Claims) > 0 {
		b, err := json.Marshal(id.Claims)
		if err != nil {
			return nil, api.Errorf(codes.Internal, "the caller's claims cannot be encoded: %v", err)
		}
		out.Claims = b
	}
	if !id.Expires.IsZero() {
		out.ExpiresUnixMs = id.Expires.UnixMilli()
	}
	return out, nil
}

// CallerFromProto converts an identity back (nil → nil). Claims that are
// not a JSON object are INVALID_ARGUMENT.
func CallerFromProto(m *lunorav1.Caller) (*auth.Identity, error) {
	if m == nil {
		return nil, nil
	}
	id := &auth.Identity{Method: auth.Method(m.GetMethod()), Role: auth.Role(m.GetRole()), Subject: m.GetSubject()}
	if !id.Role.Valid() {
		return nil, api.Errorf(codes.InvalidArgument, "caller role %q is not admin, service or client", clip(m.GetRole()))
	}
	if len(m.GetClaims()) > 0 {
		if err := json.Unmarshal(m.GetClaims(), &id.Claims); err != nil {
			return nil, api.Errorf(codes.InvalidArgument, "caller claims must be a JSON object: %v", err)
		}
	}
	if ms := m.GetExpiresUnixMs(); ms != 0 {
		id.Expires = time.UnixMilli(ms)
	}
	return id, nil
}

// callerOf is the wire form of the identity ctx carries.
func callerOf(ctx context.Context) (*lunorav1.Caller, error) {
	return CallerToProto(auth.FromContext(ctx))
}

// withCaller returns ctx carrying the request's caller, if it names one.
func withCaller(ctx context.Context, m *lunorav1.Caller) (context.Context, error) {
	id, err := CallerFromProto(m)
	if err != nil || id == nil {
		return ctx, err
	}
	return auth.NewContext(ctx, id), nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
