package auth

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
)

// AuthorizeCall decides whether id may call fn on the shard whose key is
// shardKey (the value of fn's shard_by column: a string or an integer; nil
// for global and root functions).
//
// Admin and service may call any function. A client may call only a
// function whose auth block lists "client", and when the block names a
// ShardKeyClaim the shard key must equal that claim (a string or number
// claim) or be one of its elements (a list claim). Keys and claims are
// compared as canonical strings, so the claim "42" and the int key 42 match.
func AuthorizeCall(id *Identity, fn *schema.Function, shardKey any) error {
	if id == nil {
		return ErrNoCredential
	}
	switch id.Role {
	case RoleAdmin, RoleService:
		return nil
	case RoleClient:
	default:
		return api.Wrap(ErrPermissionDenied, fmt.Sprintf("role %q may call nothing", id.Role))
	}
	if !fn.Auth.Allows(string(RoleClient)) {
		return api.Wrap(ErrPermissionDenied, fmt.Sprintf("function %s is not granted to clients (its lunora.yaml auth.roles does not list client)", fn.Name))
	}
	claim := fn.Auth.ShardKeyClaim
	if claim == "" {
		return nil
	}
	key, ok := canonical(shardKey)
	if !ok || key == "" {
		return api.Wrap(ErrPermissionDenied, fmt.Sprintf("function %s is scoped by the claim %q but the call names no shard key", fn.Name, claim))
	}
	v, present := id.Claims[claim]
	if !present {
		return api.Wrap(ErrPermissionDenied, fmt.Sprintf("function %s is scoped by the claim %q, which the credential does not carry", fn.Name, claim))
	}
	if claimAllows(v, key) {
		return nil
	}
	return api.Wrap(ErrPermissionDenied, fmt.Sprintf("function %s: shard key %q is not allowed by the credential's %q claim", fn.Name, key, claim))
}

func claimAllows(v any, key string) bool {
	if list, ok := v.([]any); ok {
		for _, e := range list {
			if s, ok := canonical(e); ok && s != "" && s == key {
				return true
			}
		}
		return false
	}
	if list, ok := v.([]string); ok {
		for _, s := range list {
			if s != "" && s == key {
				return true
			}
		}
		return false
	}
	s, ok := canonical(v)
	return ok && s != "" && s == key
}

// canonical renders a shard key or a claim element as the string a shard
// ID holds: strings as they are, integers (also integral floats, as JSON
// numbers decode) in decimal. Other values match nothing.
func canonical(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int:
		return strconv.Itoa(x), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return strconv.FormatInt(int64(x), 10), true
		}
		return "", false
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return strconv.FormatInt(n, 10), true
		}
	}
	return "", false
}

// AuthorizeSQL decides whether id may run admin SQL on shards: admin and
// service may.
func AuthorizeSQL(id *Identity) error {
	if id == nil {
		return ErrNoCredential
	}
	if id.Role == RoleAdmin || id.Role == RoleService {
		return nil
	}
	return api.Wrap(ErrPermissionDenied, fmt.Sprintf("SQL needs the admin or service role; this credential has role %q", id.Role))
}

// AuthorizeAdmin decides whether id may manage API keys and the cluster:
// admin only.
func AuthorizeAdmin(id *Identity) error {
	if id == nil {
		return ErrNoCredential
	}
	if id.Role == RoleAdmin {
		return nil
	}
	return api.Wrap(ErrPermissionDenied, fmt.Sprintf("this needs the admin role; this credential has role %q", id.Role))
}
