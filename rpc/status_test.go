package rpc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/rpc"
)

// TestGatherCluster: a status gathered from every node shows each node's
// liveness as it is now (an answer beats a gossip word seconds old), adds
// up the moves in flight and lists every stream once, with the sender's
// count.
func TestGatherCluster(t *testing.T) {
	member := func(id, alive string) api.RingNode {
		return api.RingNode{ID: id, GRPCAddr: id + ":7070", Alive: alive}
	}
	st := &api.Status{NodeID: "n1", Cluster: &api.ClusterStatus{
		Ring: api.Ring{Epoch: 4,
			Nodes: []api.RingNode{member("n1", "alive"), member("n2", "alive"), member("n3", "dead"), member("n4", "")},
			Members: []api.RingNode{member("n1", "alive"), member("n2", "alive"), member("n3", "dead"), member("n4", ""),
				member("n5", ""), member("n6", "left")}},
		MovesInFlight: 1,
		// n1 receives k=a from n4: the receiver's count.
		Moves: []api.ShardMove{{ShardID: "k=a", From: "n4", To: "n1", Bytes: 10, Size: 100}},
	}}
	// n2 was killed a moment ago (gossip still says alive); n3 is back
	// (gossip still says dead); n4 answers (no gossip word); n5 does not;
	// n6 left.
	answers := map[string]*api.Status{
		"n3:7070": {NodeID: "n3", Cluster: &api.ClusterStatus{}},
		"n4:7070": {NodeID: "n4", Cluster: &api.ClusterStatus{MovesInFlight: 2, Moves: []api.ShardMove{
			{ShardID: "k=a", From: "n4", To: "n1", Bytes: 40, Size: 100, Elapsed: time.Second},
			{ShardID: "k=b", From: "n4", To: "n3", Bytes: 5, Size: 50},
		}}},
	}
	rpc.GatherCluster(context.Background(), st, time.Second, func(ctx context.Context, addr string) (*api.Status, error) {
		if s, ok := answers[addr]; ok {
			return s, nil
		}
		return nil, errors.New("connection refused")
	})
	want := map[string]string{"n1": "alive", "n2": rpc.Unreachable, "n3": rpc.Reachable, "n4": rpc.Reachable, "n5": rpc.Unreachable, "n6": "left"}
	for _, list := range [][]api.RingNode{st.Cluster.Ring.Nodes, st.Cluster.Ring.Members} {
		for _, m := range list {
			if m.Alive != want[m.ID] {
				t.Errorf("%s: alive %q, want %q", m.ID, m.Alive, want[m.ID])
			}
		}
	}
	if st.Cluster.MovesInFlight != 3 {
		t.Errorf("moves in flight %d, want 3 (1 here + 2 on n4)", st.Cluster.MovesInFlight)
	}
	if len(st.Cluster.Moves) != 2 {
		t.Fatalf("moves %+v, want k=a once and k=b", st.Cluster.Moves)
	}
	for _, m := range st.Cluster.Moves {
		if m.ShardID == "k=a" && m.Bytes != 40 {
			t.Errorf("k=a: %d bytes, want the sender's count 40", m.Bytes)
		}
	}
}

// TestGatherClusterWrongNode: a process answering on a node's recorded
// address that is another node does not vouch for it.
func TestGatherClusterWrongNode(t *testing.T) {
	st := &api.Status{NodeID: "n1", Cluster: &api.ClusterStatus{Ring: api.Ring{
		Members: []api.RingNode{{ID: "n1", GRPCAddr: "a1"}, {ID: "n2", GRPCAddr: "a2"}}}}}
	rpc.GatherCluster(context.Background(), st, time.Second, func(ctx context.Context, addr string) (*api.Status, error) {
		return &api.Status{NodeID: "n9"}, nil
	})
	if a := st.Cluster.Ring.Members[1].Alive; a != rpc.Unreachable {
		t.Fatalf("n2, whose address answers as n9: %q", a)
	}
}
