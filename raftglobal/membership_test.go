package raftglobal

import (
	"testing"
	"time"
)

func TestMembership(t *testing.T) {
	c := NewTestCluster(t, 3, 1)
	ctx := ctxT(t, 30*time.Second)
	leader := c.WaitForLeader(10 * time.Second)
	if id, err := c.Node(c.NonVoters()[0]).WaitForLeader(ctx); err != nil || id != leader.NodeID() {
		t.Fatalf("WaitForLeader on the non-voter: %q %v", id, err)
	}
	servers, err := leader.Servers()
	if err != nil || len(servers) != 4 {
		t.Fatalf("servers: %+v %v", servers, err)
	}
	voters := 0
	for _, m := range servers {
		if m.Voter {
			voters++
		}
	}
	if voters != 3 {
		t.Fatalf("%d voters in %+v", voters, servers)
	}
	nv := c.NonVoters()[0]
	// Joining again with the same role is a no-op; followers refuse.
	if err := leader.Join(ctx, nv, "inmem-"+nv, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(c.Followers()[0]).Join(ctx, "x", "inmem-x", false); err == nil {
		t.Fatal("Join on a follower succeeded")
	} else if _, ok := isNotLeader(err); !ok {
		t.Fatalf("Join on a follower: %v", err)
	}
	// Promote the non-voter, then remove a voter (a graceful leave).
	if err := leader.Join(ctx, nv, "inmem-"+nv, true); err != nil {
		t.Fatal(err)
	}
	gone := c.Followers()[0]
	if err := leader.Remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := leader.Remove(ctx, gone); err != nil {
		t.Fatalf("removing a non-member: %v", err)
	}
	servers, _ = leader.Servers()
	for _, m := range servers {
		if m.ID == gone || (m.ID == nv && !m.Voter) {
			t.Fatalf("after promote and remove: %+v", servers)
		}
	}
	c.KillNode(gone)
	// The cluster still takes writes with its new voter set.
	if _, err := leader.Write(ctx, Command{SQL: []string{"SELECT 1"}}); err != nil {
		t.Fatal(err)
	}
}
