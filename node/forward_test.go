package node

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

const forwardTestSchema = `
tables:
  settings:
    global: true
    columns: {k: text, v: text}
    primary_key: [k]
functions:
  settings:put:
    kind: mutation
    global: true
    args: {k: text, v: text}
    sql:
      - INSERT OR REPLACE INTO settings(k, v) VALUES (:k, :v)
`

// followerGlobal is a member of the global tier that is not the leader:
// every write answers NotLeaderError naming leader. Methods these tests do
// not reach are left to the embedded nil interface (they would panic).
type followerGlobal struct {
	Global
	leader string
	nodes  []raftglobal.NodeInfo
}

func (g *followerGlobal) notLeader() *raftglobal.NotLeaderError {
	return &raftglobal.NotLeaderError{LeaderID: g.leader}
}

func (g *followerGlobal) Write(context.Context, raftglobal.Command) (*api.Result, error) {
	return nil, g.notLeader()
}
func (g *followerGlobal) IsLeader() bool                        { return false }
func (g *followerGlobal) NotLeader() *raftglobal.NotLeaderError { return g.notLeader() }
func (g *followerGlobal) Nodes(context.Context) ([]raftglobal.NodeInfo, error) {
	return g.nodes, nil
}

// leaderPeerFake records what reached the leader.
type leaderPeerFake struct {
	Peer
	mu    sync.Mutex
	calls []api.ReadOptions
	joins []api.JoinRequest
}

func (p *leaderPeerFake) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, read)
	return &api.Result{ShardID: shardID}, nil
}

func (p *leaderPeerFake) Join(ctx context.Context, req api.JoinRequest) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.joins = append(p.joins, req)
	return "n2", nil
}

func newFollower(t *testing.T, g *followerGlobal) (*Node, *leaderPeerFake, *[]string) {
	t.Helper()
	app, err := schema.Parse("lunora.yaml", []byte(forwardTestSchema))
	if err != nil {
		t.Fatal(err)
	}
	leader := &leaderPeerFake{}
	var dialed []string
	n, err := New(Config{App: app, Shards: noShards{}, Global: g, NodeID: "n1", GRPCAddr: "n1:1",
		Dial: func(addr string) (Peer, error) { dialed = append(dialed, addr); return leader, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return n, leader, &dialed
}

func TestForwardToLeader(t *testing.T) {
	ctx := context.Background()
	g := &followerGlobal{leader: "n2", nodes: []raftglobal.NodeInfo{{ID: "n1", GRPCAddr: "n1:1"}, {ID: "n2", GRPCAddr: "n2:1"}}}
	n, leader, dialed := newFollower(t, g)
	put := map[string]any{"k": "a", "v": "b"}

	// A follower passes a global write to the leader's node, once, marked
	// forwarded.
	if _, err := n.Call(ctx, schema.GlobalGroup, "settings:put", put, api.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(leader.calls) != 1 || !leader.calls[0].Forwarded || len(*dialed) != 1 || (*dialed)[0] != "n2:1" {
		t.Fatalf("forwarded calls %+v, dialed %v", leader.calls, *dialed)
	}
	// A call that was itself forwarded is not passed on again: leadership
	// moved while it travelled.
	_, err := n.Call(ctx, schema.GlobalGroup, "settings:put", put, api.ReadOptions{Forwarded: true})
	if api.CodeOf(err) != codes.Unavailable || len(leader.calls) != 1 {
		t.Fatalf("a forwarded call on a follower: %v (%d calls reached the leader)", err, len(leader.calls))
	}
	// The same helper serves the admin paths.
	if _, err := n.Join(ctx, api.JoinRequest{NodeID: "n3", RaftAddr: "r", GRPCAddr: "g"}); err != nil || len(leader.joins) != 1 || !leader.joins[0].Forwarded {
		t.Fatalf("join on a follower: %v, %+v", err, leader.joins)
	}
	if _, err := n.Join(ctx, api.JoinRequest{NodeID: "n3", RaftAddr: "r", GRPCAddr: "g", Forwarded: true}); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("a forwarded join on a follower: %v", err)
	}
	if len(*dialed) != 1 {
		t.Fatalf("the leader's client was not reused: dialed %v", *dialed)
	}

	// No leader known: the NotLeaderError itself (UNAVAILABLE, retryable).
	g.leader = ""
	_, err = n.Call(ctx, schema.GlobalGroup, "settings:put", put, api.ReadOptions{})
	var nl *raftglobal.NotLeaderError
	if !errors.As(err, &nl) || api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("no leader known: %v", err)
	}
	// A leader whose address has not replicated yet: UNAVAILABLE naming it.
	g.leader = "n9"
	if _, err = n.Call(ctx, schema.GlobalGroup, "settings:put", put, api.ReadOptions{}); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("leader without an address: %v", err)
	}
}
