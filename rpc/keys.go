package rpc

import (
	"context"
	"math"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc/codes"
)

// Keys is the API-key half of the node API (*node.Node): keys live in the
// global tier. A NodeServer whose Shards do not implement it answers these
// methods UNIMPLEMENTED.
type Keys interface {
	// CreateKey makes a key (auth.NewKey) and stores its record; the token
	// is for the caller to hand out once.
	CreateKey(ctx context.Context, name string, role auth.Role) (token string, rec auth.KeyRecord, err error)
	// StoreKey stores a record another node made (a forwarded CreateKey).
	StoreKey(ctx context.Context, rec auth.KeyRecord, forwarded bool) (auth.KeyRecord, error)
	// RevokeKey marks a key revoked; NOT_FOUND when there is none.
	RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error)
	// ListKeys lists up to limit keys (0: a default), oldest first.
	ListKeys(ctx context.Context, limit int) (keys []auth.KeyRecord, more bool, err error)
	// LookupKey reads one key's record; nil when unknown.
	LookupKey(ctx context.Context, id string) (*auth.KeyRecord, error)
}

func (s *NodeServer) keys() (Keys, error) {
	k, ok := s.shards.(Keys)
	if !ok {
		return nil, ToStatus(api.New(codes.Unimplemented, "this node keeps no API keys"))
	}
	return k, nil
}

// KeyToProto converts a key record; the hash only when withHash.
func KeyToProto(r auth.KeyRecord, withHash bool) *lunorav1.ApiKey {
	out := &lunorav1.ApiKey{Id: r.ID, Name: r.Name, Role: string(r.Role)}
	if withHash {
		out.Hash = r.Hash
	}
	if !r.Created.IsZero() {
		out.CreatedUnixMs = r.Created.UnixMilli()
	}
	if !r.Revoked.IsZero() {
		out.RevokedUnixMs = r.Revoked.UnixMilli()
	}
	return out
}

// KeyFromProto converts a key record back.
func KeyFromProto(m *lunorav1.ApiKey) auth.KeyRecord {
	out := auth.KeyRecord{ID: m.GetId(), Name: m.GetName(), Role: auth.Role(m.GetRole()), Hash: m.GetHash()}
	if ms := m.GetCreatedUnixMs(); ms != 0 {
		out.Created = time.UnixMilli(ms)
	}
	if ms := m.GetRevokedUnixMs(); ms != 0 {
		out.Revoked = time.UnixMilli(ms)
	}
	return out
}

// CreateKey implements lunorav1.NodeServer.
func (s *NodeServer) CreateKey(ctx context.Context, req *lunorav1.CreateKeyRequest) (*lunorav1.CreateKeyResponse, error) {
	k, err := s.keys()
	if err != nil {
		return nil, err
	}
	if req.GetForwarded() {
		if req.GetKey() == nil {
			return nil, ToStatus(api.New(codes.InvalidArgument, "a forwarded CreateKey carries the key's record"))
		}
		rec, err := k.StoreKey(ctx, KeyFromProto(req.GetKey()), true)
		if err != nil {
			return nil, statusFor(ctx, s.log, "Node.CreateKey", err)
		}
		return &lunorav1.CreateKeyResponse{Key: KeyToProto(rec, false)}, nil
	}
	token, rec, err := k.CreateKey(ctx, req.GetName(), auth.Role(req.GetRole()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.CreateKey", err)
	}
	return &lunorav1.CreateKeyResponse{Token: token, Key: KeyToProto(rec, false)}, nil
}

// RevokeKey implements lunorav1.NodeServer.
func (s *NodeServer) RevokeKey(ctx context.Context, req *lunorav1.RevokeKeyRequest) (*lunorav1.RevokeKeyResponse, error) {
	k, err := s.keys()
	if err != nil {
		return nil, err
	}
	rec, err := k.RevokeKey(ctx, req.GetId(), req.GetForwarded())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.RevokeKey", err)
	}
	return &lunorav1.RevokeKeyResponse{Key: KeyToProto(rec, false)}, nil
}

// ListKeys implements lunorav1.NodeServer.
func (s *NodeServer) ListKeys(ctx context.Context, req *lunorav1.ListKeysRequest) (*lunorav1.ListKeysResponse, error) {
	k, err := s.keys()
	if err != nil {
		return nil, err
	}
	limit := int(min(req.GetLimit(), math.MaxInt32))
	recs, more, err := k.ListKeys(ctx, limit)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.ListKeys", err)
	}
	out := &lunorav1.ListKeysResponse{More: more}
	for _, r := range recs {
		out.Keys = append(out.Keys, KeyToProto(r, false))
	}
	return out, nil
}

// LookupKey implements lunorav1.NodeServer.
func (s *NodeServer) LookupKey(ctx context.Context, req *lunorav1.LookupKeyRequest) (*lunorav1.LookupKeyResponse, error) {
	k, err := s.keys()
	if err != nil {
		return nil, err
	}
	rec, err := k.LookupKey(ctx, req.GetId())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.LookupKey", err)
	}
	if rec == nil {
		return &lunorav1.LookupKeyResponse{}, nil
	}
	return &lunorav1.LookupKeyResponse{Key: KeyToProto(*rec, true)}, nil
}

// CreateKey asks the node to make an API key with a name and a role; the
// token is the only copy of the key's secret.
func (c *NodeClient) CreateKey(ctx context.Context, name string, role auth.Role) (string, auth.KeyRecord, error) {
	resp, err := c.node.CreateKey(ctx, &lunorav1.CreateKeyRequest{Name: name, Role: string(role)})
	if err != nil {
		return "", auth.KeyRecord{}, c.fromStatus(err)
	}
	return resp.GetToken(), KeyFromProto(resp.GetKey()), nil
}

// StoreKey passes a key record this node made to the node (the leader):
// a forwarded CreateKey.
func (c *NodeClient) StoreKey(ctx context.Context, rec auth.KeyRecord, _ bool) (auth.KeyRecord, error) {
	resp, err := c.node.CreateKey(ctx, &lunorav1.CreateKeyRequest{Name: rec.Name, Role: string(rec.Role), Forwarded: true, Key: KeyToProto(rec, true)})
	if err != nil {
		return auth.KeyRecord{}, c.fromStatus(err)
	}
	return KeyFromProto(resp.GetKey()), nil
}

// RevokeKey asks the node to revoke a key.
func (c *NodeClient) RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error) {
	resp, err := c.node.RevokeKey(ctx, &lunorav1.RevokeKeyRequest{Id: id, Forwarded: forwarded})
	if err != nil {
		return auth.KeyRecord{}, c.fromStatus(err)
	}
	return KeyFromProto(resp.GetKey()), nil
}

// ListKeys lists up to limit keys (0: the node's default) without hashes.
func (c *NodeClient) ListKeys(ctx context.Context, limit int) ([]auth.KeyRecord, bool, error) {
	if limit < 0 || limit > math.MaxInt32 {
		return nil, false, api.Errorf(codes.InvalidArgument, "limit %d is out of range", limit)
	}
	resp, err := c.node.ListKeys(ctx, &lunorav1.ListKeysRequest{Limit: uint32(limit)})
	if err != nil {
		return nil, false, c.fromStatus(err)
	}
	out := make([]auth.KeyRecord, 0, len(resp.GetKeys()))
	for _, k := range resp.GetKeys() {
		out = append(out, KeyFromProto(k))
	}
	return out, resp.GetMore(), nil
}

// LookupKey reads one key's record from the node's replica of the global
// tier (nil when unknown). A NodeClient is an auth.KeyStore: what a
// gateway checks API keys with.
func (c *NodeClient) LookupKey(ctx context.Context, id string) (*auth.KeyRecord, error) {
	resp, err := c.node.LookupKey(ctx, &lunorav1.LookupKeyRequest{Id: id})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	if resp.GetKey() == nil {
		return nil, nil
	}
	rec := KeyFromProto(resp.GetKey())
	return &rec, nil
}

var _ auth.KeyStore = (*NodeClient)(nil)
