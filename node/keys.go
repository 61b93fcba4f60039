package node

import (
	"context"
	"errors"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/raftglobal"
	"google.golang.org/grpc/codes"
)

// API keys live in the global tier (raftglobal's __lunora_keys): the node
// an operator asks makes the key (auth.NewKey), so its secret never leaves
// that node; the record (the secret's SHA-256) goes to the leader like
// every write. Gateways read records back with LookupKey.

// KeyLookupStaleness is how long this node's replica may have been out of
// touch with the global tier's leader and still answer LookupKey: beyond
// it a lookup is refused (UNAVAILABLE) rather than risk missing a
// revocation. A revoked key therefore stops working within the gateway's
// key cache TTL plus the replica's replication lag, which a replica in
// touch with the leader keeps to well under a second.
const KeyLookupStaleness = 3 * time.Second

// defaultKeyList is how many keys ListKeys answers when asked for 0.
const defaultKeyList = 1000

// keyPeer is a Peer that takes forwarded key writes (*rpc.NodeClient).
type keyPeer interface {
	StoreKey(ctx context.Context, rec auth.KeyRecord, forwarded bool) (auth.KeyRecord, error)
	RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error)
}

func (n *Node) keyGlobal() (Global, error) {
	if n.cfg.Global == nil {
		return nil, api.Errorf(codes.FailedPrecondition, "this node runs no global tier, where API keys are kept")
	}
	return n.cfg.Global, nil
}

// CreateKey makes an API key with a name and a role and stores its record
// in the global tier; the token is the only copy of its secret.
func (n *Node) CreateKey(ctx context.Context, name string, role auth.Role) (string, auth.KeyRecord, error) {
	if _, err := n.keyGlobal(); err != nil {
		return "", auth.KeyRecord{}, err
	}
	if !role.Valid() {
		return "", auth.KeyRecord{}, api.Errorf(codes.InvalidArgument, "an API key's role must be admin, service or client, not %q", clipName(string(role)))
	}
	token, rec, err := auth.NewKey(name, role, time.Now())
	if err != nil {
		return "", auth.KeyRecord{}, err
	}
	stored, err := n.StoreKey(ctx, rec, false)
	if err != nil {
		return "", auth.KeyRecord{}, err
	}
	return token, stored, nil
}

// StoreKey stores a key record (passed to the leader).
func (n *Node) StoreKey(ctx context.Context, rec auth.KeyRecord, forwarded bool) (auth.KeyRecord, error) {
	g, err := n.keyGlobal()
	if err != nil {
		return auth.KeyRecord{}, err
	}
	if !rec.Role.Valid() {
		return auth.KeyRecord{}, api.Errorf(codes.InvalidArgument, "an API key's role must be admin, service or client, not %q", clipName(string(rec.Role)))
	}
	k, err := g.PutKey(ctx, raftglobal.APIKey{ID: rec.ID, Name: rec.Name, Role: string(rec.Role), Hash: rec.Hash})
	if errors.As(err, new(*raftglobal.NotLeaderError)) {
		return forwardToLeader(ctx, n, err, forwarded, "the new API key", func(p Peer) (auth.KeyRecord, error) {
			kp, ok := p.(keyPeer)
			if !ok {
				return auth.KeyRecord{}, api.Errorf(codes.Unimplemented, "the leader's client cannot take API keys")
			}
			return kp.StoreKey(ctx, rec, true)
		})
	}
	if err != nil {
		return auth.KeyRecord{}, err
	}
	return keyRecord(k), nil
}

// RevokeKey marks a key revoked (passed to the leader); NOT_FOUND when no
// key has the ID.
func (n *Node) RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error) {
	g, err := n.keyGlobal()
	if err != nil {
		return auth.KeyRecord{}, err
	}
	k, err := g.RevokeKey(ctx, id)
	if errors.As(err, new(*raftglobal.NotLeaderError)) {
		return forwardToLeader(ctx, n, err, forwarded, "the revocation of API key "+clipName(id), func(p Peer) (auth.KeyRecord, error) {
			kp, ok := p.(keyPeer)
			if !ok {
				return auth.KeyRecord{}, api.Errorf(codes.Unimplemented, "the leader's client cannot revoke API keys")
			}
			return kp.RevokeKey(ctx, id, true)
		})
	}
	if err != nil {
		return auth.KeyRecord{}, err
	}
	return keyRecord(k), nil
}

// ListKeys lists up to limit keys (0: 1000) from this replica, oldest
// first, without their hashes.
func (n *Node) ListKeys(ctx context.Context, limit int) ([]auth.KeyRecord, bool, error) {
	g, err := n.keyGlobal()
	if err != nil {
		return nil, false, err
	}
	if limit == 0 {
		limit = defaultKeyList
	}
	ks, more, err := g.Keys(ctx, limit)
	if err != nil {
		return nil, false, err
	}
	out := make([]auth.KeyRecord, len(ks))
	for i, k := range ks {
		out[i] = keyRecord(k)
		out[i].Hash = nil
	}
	return out, more, nil
}

// LookupKey reads one key's record from this replica (nil when unknown);
// refused while the replica is out of touch with the leader (see
// KeyLookupStaleness). *Node is an auth.KeyStore (dev mode's gateway).
func (n *Node) LookupKey(ctx context.Context, id string) (*auth.KeyRecord, error) {
	g, err := n.keyGlobal()
	if err != nil {
		return nil, err
	}
	k, err := g.LookupKey(ctx, id, KeyLookupStaleness)
	if err != nil || k == nil {
		return nil, err
	}
	rec := keyRecord(*k)
	return &rec, nil
}

func keyRecord(k raftglobal.APIKey) auth.KeyRecord {
	rec := auth.KeyRecord{ID: k.ID, Name: k.Name, Role: auth.Role(k.Role), Hash: k.Hash}
	if k.CreatedMs != 0 {
		rec.Created = time.UnixMilli(k.CreatedMs)
	}
	if k.RevokedMs != 0 {
		rec.Revoked = time.UnixMilli(k.RevokedMs)
	}
	return rec
}

func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

var _ auth.KeyStore = (*Node)(nil)
