package router

import (
	"context"

	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
)

// API keys live in the global tier, so any node serves them (a write is
// passed to the leader there): they are routed like global-tier calls.
// The Router is the gateway's auth.KeyStore and its gateway.KeyAdmin.

// LookupKey reads a key's record from a node's replica (nil when unknown).
func (r *Router) LookupKey(ctx context.Context, id string) (*auth.KeyRecord, error) {
	var rec *auth.KeyRecord
	err := r.do(ctx, schema.GlobalGroup, true, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		rec, err = c.LookupKey(ctx, id)
		return err
	})
	return rec, err
}

// CreateKey has a node make a key; the token is answered once.
func (r *Router) CreateKey(ctx context.Context, name string, role auth.Role) (string, auth.KeyRecord, error) {
	var token string
	var rec auth.KeyRecord
	err := r.do(ctx, schema.GlobalGroup, false, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		token, rec, err = c.CreateKey(ctx, name, role)
		return err
	})
	return token, rec, err
}

// RevokeKey has a node revoke a key (revoking twice is harmless).
func (r *Router) RevokeKey(ctx context.Context, id string, _ bool) (auth.KeyRecord, error) {
	var rec auth.KeyRecord
	err := r.do(ctx, schema.GlobalGroup, true, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		rec, err = c.RevokeKey(ctx, id, false)
		return err
	})
	return rec, err
}

// ListKeys lists keys from a node's replica.
func (r *Router) ListKeys(ctx context.Context, limit int) ([]auth.KeyRecord, bool, error) {
	var keys []auth.KeyRecord
	var more bool
	err := r.do(ctx, schema.GlobalGroup, true, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		keys, more, err = c.ListKeys(ctx, limit)
		return err
	})
	return keys, more, err
}
