package node

import (
	"context"
	"sync"
	"testing"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// keyFollowerGlobal is a follower whose key writes name the leader.
type keyFollowerGlobal struct{ followerGlobal }

func (g *keyFollowerGlobal) PutKey(context.Context, raftglobal.APIKey) (raftglobal.APIKey, error) {
	return raftglobal.APIKey{}, g.notLeader()
}
func (g *keyFollowerGlobal) RevokeKey(context.Context, string) (raftglobal.APIKey, error) {
	return raftglobal.APIKey{}, g.notLeader()
}

// keyLeaderPeer records what reached the leader: key records and the
// caller of each call.
type keyLeaderPeer struct {
	Peer
	mu      sync.Mutex
	stored  []auth.KeyRecord
	revoked []string
	callers []*auth.Identity
}

func (p *keyLeaderPeer) StoreKey(ctx context.Context, rec auth.KeyRecord, forwarded bool) (auth.KeyRecord, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !forwarded {
		return auth.KeyRecord{}, api.New(codes.Internal, "not marked forwarded")
	}
	p.stored = append(p.stored, rec)
	rec.Hash = nil
	return rec, nil
}

func (p *keyLeaderPeer) RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !forwarded {
		return auth.KeyRecord{}, api.New(codes.Internal, "not marked forwarded")
	}
	p.revoked = append(p.revoked, id)
	return auth.KeyRecord{ID: id}, nil
}

func (p *keyLeaderPeer) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.callers = append(p.callers, auth.FromContext(ctx))
	return &api.Result{ShardID: shardID}, nil
}

func newKeyFollower(t *testing.T) (*Node, *keyLeaderPeer) {
	t.Helper()
	app, err := schema.Parse("lunora.yaml", []byte(forwardTestSchema))
	if err != nil {
		t.Fatal(err)
	}
	g := &keyFollowerGlobal{followerGlobal{leader: "n2", nodes: []raftglobal.NodeInfo{{ID: "n1", GRPCAddr: "n1:1"}, {ID: "n2", GRPCAddr: "n2:1"}}}}
	leader := &keyLeaderPeer{}
	n, err := New(Config{App: app, Shards: noShards{}, Global: g, NodeID: "n1", GRPCAddr: "n1:1",
		Dial: func(addr string) (Peer, error) { return leader, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return n, leader
}

// A follower makes the key itself and passes only its record — the
// secret's hash, never the token — to the leader.
func TestCreateKeyOnFollowerForwardsTheRecord(t *testing.T) {
	ctx := context.Background()
	n, leader := newKeyFollower(t)
	token, rec, err := n.CreateKey(ctx, "ci", auth.RoleService)
	if err != nil {
		t.Fatal(err)
	}
	if token == "" || rec.ID == "" || rec.Role != auth.RoleService || rec.Name != "ci" {
		t.Fatalf("CreateKey: token %q, record %+v", token, rec)
	}
	if len(leader.stored) != 1 || leader.stored[0].ID != rec.ID || len(leader.stored[0].Hash) != 32 {
		t.Fatalf("the leader got %+v", leader.stored)
	}
	if _, _, err := n.CreateKey(ctx, "x", auth.Role("root")); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("CreateKey with an unknown role: %v", err)
	}
	if _, err := n.RevokeKey(ctx, rec.ID, false); err != nil || len(leader.revoked) != 1 || leader.revoked[0] != rec.ID {
		t.Fatalf("RevokeKey on a follower: %v, leader revoked %v", err, leader.revoked)
	}
	if _, err := n.RevokeKey(ctx, rec.ID, true); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("a forwarded revocation on a follower: %v", err)
	}
}

// A call forwarded to the leader runs as its caller.
func TestForwardKeepsTheCaller(t *testing.T) {
	n, leader := newKeyFollower(t)
	id := &auth.Identity{Method: auth.MethodJWT, Role: auth.RoleClient, Subject: "ada", Claims: map[string]any{"sub": "ada"}}
	ctx := auth.NewContext(context.Background(), id)
	if _, err := n.Call(ctx, schema.GlobalGroup, "settings:put", map[string]any{"k": "a", "v": "b"}, api.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(leader.callers) != 1 || leader.callers[0] != id {
		t.Fatalf("the leader saw callers %+v", leader.callers)
	}
}
