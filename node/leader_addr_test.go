package node

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
)

// countingFollower is a followerGlobal that counts its reads of the node
// records and can name a leader (Leader).
type countingFollower struct {
	followerGlobal
	reads atomic.Int64
}

func (g *countingFollower) Nodes(ctx context.Context) ([]raftglobal.NodeInfo, error) {
	g.reads.Add(1)
	return g.followerGlobal.Nodes(ctx)
}

func (g *countingFollower) Leader() (string, string) { return g.leader, "" }

// TestLeaderAddrCached (issue 14): a follower names the leader's node-API
// address (rpc.LeaderHeader: the gateway sends the next write there) and
// forwards writes to it without reading the node records for every call;
// a new leader is looked up again.
func TestLeaderAddrCached(t *testing.T) {
	ctx := context.Background()
	g := &countingFollower{followerGlobal: followerGlobal{leader: "n2", nodes: []raftglobal.NodeInfo{{ID: "n1", GRPCAddr: "n1:1"}, {ID: "n2", GRPCAddr: "n2:1"}, {ID: "n3", GRPCAddr: "n3:1"}}}}
	app, err := schema.Parse("lunora.yaml", []byte(forwardTestSchema))
	if err != nil {
		t.Fatal(err)
	}
	leader := &leaderPeerFake{}
	n, err := New(Config{App: app, Shards: noShards{}, Global: g, NodeID: "n1", GRPCAddr: "n1:1",
		Dial: func(addr string) (Peer, error) { return leader, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.GlobalLeaderAddr(); got != "n2:1" {
		t.Fatalf("GlobalLeaderAddr = %q, want n2:1", got)
	}
	for range 20 {
		if _, err := n.Call(ctx, schema.GlobalGroup, "settings:put", map[string]any{"k": "a", "v": "b"}, api.ReadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(leader.calls) != 20 || g.reads.Load() != 1 {
		t.Fatalf("%d calls forwarded with %d reads of the node records; want 20 with 1", len(leader.calls), g.reads.Load())
	}
	g.leader = "n3"
	if got := n.GlobalLeaderAddr(); got != "n3:1" || g.reads.Load() != 2 {
		t.Fatalf("after a leader change GlobalLeaderAddr = %q with %d reads; want n3:1 with 2", got, g.reads.Load())
	}
	g.leader = ""
	if got := n.GlobalLeaderAddr(); got != "" {
		t.Fatalf("no leader: GlobalLeaderAddr = %q", got)
	}
}
