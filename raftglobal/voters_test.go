package raftglobal

import (
	"context"
	"errors"
	"fmt"
	"github.com/hashicorp/raft"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// roles returns the voters and the non-voters of s's configuration, by ID.
func roles(t testing.TB, s *Store) (voters, nonVoters []string) {
	t.Helper()
	servers, err := s.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range servers {
		if m.Voter {
			voters = append(voters, m.ID)
		} else {
			nonVoters = append(nonVoters, m.ID)
		}
	}
	slices.Sort(voters)
	slices.Sort(nonVoters)
	return voters, nonVoters
}

// waitRoles waits until the leader's configuration has exactly these
// voters and non-voters and returns that leader.
func waitRoles(t testing.TB, c *TestCluster, voters, nonVoters []string) *Store {
	t.Helper()
	var leader *Store
	waitFor(t, 10*time.Second, func() error {
		leader = c.WaitForLeader(10 * time.Second)
		v, nv := roles(t, leader)
		if !slices.Equal(v, voters) || !slices.Equal(nv, nonVoters) {
			return fmt.Errorf("voters %v non-voters %v, want %v and %v", v, nv, voters, nonVoters)
		}
		return nil
	})
	return leader
}

// waitUnreachable waits until the leader's heartbeats to id fail.
func waitUnreachable(t testing.TB, c *TestCluster, id string) *Store {
	t.Helper()
	var leader *Store
	waitFor(t, 10*time.Second, func() error {
		leader = c.WaitForLeader(10 * time.Second)
		if _, ok := leader.Health()[id]; !ok {
			return fmt.Errorf("the leader %s still reaches %s", leader.NodeID(), id)
		}
		return nil
	})
	return leader
}

func mustWrite(t testing.TB, c *TestCluster, k string) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	var err error
	for ctx.Err() == nil {
		if _, err = c.WaitForLeader(10*time.Second).Write(ctx, put(k, 1)); err == nil {
			return
		}
	}
	t.Fatalf("write %s: %v", k, err)
}

// The README walkthrough in one process: 3 voters and a non-voter; a voter
// leaves gracefully (removed from the configuration: the non-voter is
// promoted first), then another voter dies — the global tier still has a
// quorum. Before voters followed the ring, the leave left 2 voters and the
// death took the quorum with it.
func TestRemoveLiveVoterPromotesNonVoter(t *testing.T) {
	c := NewTestCluster(t, 3, 1, withSchema)
	leader := c.WaitForLeader(10 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	followers := c.Followers()
	leaving, dying := followers[0], followers[1]
	start := time.Now()
	if err := leader.Remove(ctx, leaving); err != nil {
		t.Fatal(err)
	}
	t.Logf("removed voter %s with a promotion in %v", leaving, time.Since(start).Round(time.Microsecond))
	want := []string{leader.NodeID(), dying, "n3"}
	slices.Sort(want)
	waitRoles(t, c, want, nil)
	c.KillNode(leaving)
	c.KillNode(dying)
	mustWrite(t, c, "after-leave-and-kill")
}

// A dead voter removed by an operator is replaced by the non-voter, after
// the removal (the dead one cannot help commit a promotion).
func TestRemoveDeadVoterPromotesNonVoter(t *testing.T) {
	c := NewTestCluster(t, 3, 1, withSchema)
	dead := c.Followers()[0]
	c.KillNode(dead)
	leader := waitUnreachable(t, c, dead)
	if err := leader.Remove(ctxT(t, 30*time.Second), dead); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, id := range []string{"n0", "n1", "n2", "n3"} {
		if id != dead {
			want = append(want, id)
		}
	}
	waitRoles(t, c, want, nil)
	// One more voter may die: two of three are left.
	c.KillNode(c.Followers()[0])
	mustWrite(t, c, "after-two-deaths")
}

// A removal that would leave the voters without a quorum of live ones is
// refused (FAILED_PRECONDITION, nothing changed) unless forced; with a
// live non-voter to promote first it goes through.
func TestRemoveRefusedWhenQuorumWouldBeLost(t *testing.T) {
	c := NewTestCluster(t, 3, 0, withSchema)
	followers := c.Followers()
	dead, leaving := followers[0], followers[1]
	c.KillNode(dead)
	leader := waitUnreachable(t, c, dead)
	err := leader.Remove(ctxT(t, 30*time.Second), leaving)
	if !errors.Is(err, ErrWouldLoseQuorum) || api.CodeOf(err) != codes.FailedPrecondition {
		t.Fatalf("removing live voter %s while %s is dead: %v, want ErrWouldLoseQuorum", leaving, dead, err)
	}
	t.Logf("refused: %v", err)
	waitRoles(t, c, []string{"n0", "n1", "n2"}, nil)
	mustWrite(t, c, "after-refusal")
	// Removing the leader itself is refused the same way.
	if err := leader.Remove(ctxT(t, 30*time.Second), leader.NodeID()); !errors.Is(err, ErrWouldLoseQuorum) {
		t.Fatalf("the leader removing itself while %s is dead: %v, want ErrWouldLoseQuorum", dead, err)
	}

	added := c.AddNode(false)
	leader = c.WaitForLeader(10 * time.Second)
	if err := leader.Remove(ctxT(t, 30*time.Second), leaving); err != nil {
		t.Fatalf("removing %s with %s to promote: %v", leaving, added, err)
	}
	want := []string{leader.NodeID(), dead, added}
	slices.Sort(want)
	waitRoles(t, c, want, nil)
	mustWrite(t, c, "after-promotion")
}

// The last voter is never removed, forced or not.
func TestRemoveLastVoterRefused(t *testing.T) {
	c := NewTestCluster(t, 1, 0, withSchema)
	leader := c.WaitForLeader(10 * time.Second)
	for _, force := range []bool{false, true} {
		if err := leader.RemoveWith(ctxT(t, 10*time.Second), leader.NodeID(), RemoveOptions{Force: force}); !errors.Is(err, ErrWouldLoseQuorum) {
			t.Fatalf("removing the only voter (force %v): %v", force, err)
		}
	}
	waitRoles(t, c, []string{"n0"}, nil)
}

// The leader removing itself hands leadership to another voter first
// (answering "not the leader"), and the new leader removes it and
// promotes the non-voter.
func TestLeaderRemovesItself(t *testing.T) {
	c := NewTestCluster(t, 3, 1, withSchema)
	old := c.WaitForLeader(10 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	start := time.Now()
	err := old.Remove(ctx, old.NodeID())
	if _, ok := isNotLeader(err); !ok {
		t.Fatalf("the leader removing itself: %v, want a NotLeaderError after handing leadership over", err)
	}
	handed := time.Since(start)
	leader := c.WaitForLeader(10 * time.Second)
	if leader == old {
		t.Fatal("the old leader is still the leader")
	}
	if err := leader.Remove(ctx, old.NodeID()); err != nil {
		t.Fatal(err)
	}
	t.Logf("leadership handed over in %v, removed in %v in all", handed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	var want []string
	for _, id := range []string{"n0", "n1", "n2", "n3"} {
		if id != old.NodeID() {
			want = append(want, id)
		}
	}
	waitRoles(t, c, want, nil)
	c.KillNode(old.NodeID())
	mustWrite(t, c, "after-leader-left")
}

// Below the target (a voter left with no non-voter to promote), the
// leader promotes the next node that joins; a node recorded as leaving is
// never promoted.
func TestVotersKeptAtTarget(t *testing.T) {
	c := NewTestCluster(t, 3, 1, withSchema)
	leader := c.WaitForLeader(10 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	if err := leader.MarkNode(ctx, "n3", NodeLeaving); err != nil {
		t.Fatal(err)
	}
	leaving := c.Followers()[0]
	if err := leader.Remove(ctx, leaving); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, id := range []string{"n0", "n1", "n2"} {
		if id != leaving {
			want = append(want, id)
		}
	}
	leader = waitRoles(t, c, want, []string{"n3"})
	// The keeper leaves n3 alone on its next passes too.
	for range 3 {
		if err := leader.ensureVoters(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitRoles(t, c, want, []string{"n3"})

	start := time.Now()
	added := c.AddNode(false)
	want = append(want, added)
	slices.Sort(want)
	waitRoles(t, c, want, []string{"n3"})
	t.Logf("%s joined as a non-voter and was promoted within %v", added, time.Since(start).Round(time.Millisecond))
}

// Ring operations carry the process's incarnation: a join that a leave of
// the same process has overtaken is refused, and so is a leave of a
// process a newer one has replaced; an operator's removal (incarnation 0)
// applies to every process so far.
func TestChangeRingIncarnations(t *testing.T) {
	c := NewTestCluster(t, 1, 0, withSchema)
	s := c.WaitForLeader(10 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	base := []RingNode{{ID: "a", Weight: 1}}
	withB := []RingNode{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}}
	step := func(what string, nodes []RingNode, op RingOp, wantCreated, wantStale bool) {
		t.Helper()
		epoch, _, err := s.Ring(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e, created, stale, err := s.ChangeRing(ctx, epoch, nodes, op)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if created != wantCreated || stale != wantStale {
			t.Fatalf("%s: created %v stale %v, want %v %v", what, created, stale, wantCreated, wantStale)
		}
		if created && e != epoch+1 {
			t.Fatalf("%s: epoch %d after %d", what, e, epoch)
		}
	}
	step("a joins", base, RingOp{Node: "a", Incarnation: 1}, true, false)
	step("b (incarnation 10) joins", withB, RingOp{Node: "b", Incarnation: 10}, true, false)
	step("b (10) joins again: recorded, ring unchanged", nil, RingOp{Node: "b", Incarnation: 10}, false, false)
	step("b (10) leaves", base, RingOp{Node: "b", Incarnation: 10, Leave: true}, true, false)
	step("b (10) leaves again", nil, RingOp{Node: "b", Incarnation: 10, Leave: true}, false, false)
	step("a late join of b (10)", withB, RingOp{Node: "b", Incarnation: 10}, false, true)
	step("a join of an older b (9)", withB, RingOp{Node: "b", Incarnation: 9}, false, true)
	if stale, err := s.staleIncarnation(ctx, "b", 10); err != nil || !stale {
		t.Fatalf("b (10) after leaving: stale %v %v", stale, err)
	}
	step("b restarted (11) joins", withB, RingOp{Node: "b", Incarnation: 11}, true, false)
	step("a late leave of b (10)", base, RingOp{Node: "b", Incarnation: 10, Leave: true}, false, true)
	step("an operator removes b", base, RingOp{Node: "b", Leave: true}, true, false)
	step("b (11) joins after its removal", withB, RingOp{Node: "b", Incarnation: 11}, false, true)
	step("a CAS on an old epoch", withB, RingOp{Node: "b", Incarnation: 12}, true, false)
	epoch, nodes, err := s.Ring(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("ring %d %v %v", epoch, nodes, err)
	}
	if _, created, _, err := s.ChangeRing(ctx, epoch-1, base, RingOp{Node: "b", Incarnation: 12, Leave: true}); err != nil || created {
		t.Fatalf("a leave on an old epoch: created %v %v", created, err)
	}
	ops, err := s.RingOps(ctx)
	if err != nil || ops["b"] != (RingOp{Node: "b", Incarnation: 12, Leave: true}) || ops["a"] != (RingOp{Node: "a", Incarnation: 1}) {
		t.Fatalf("ring ops %+v %v", ops, err)
	}
	// A Raft join of a process that has left is refused too, and so is
	// its "up" record; a newer process's is written.
	if err := s.AddServer(ctx, "b", "inmem-b", 12); !errors.Is(err, ErrStaleIncarnation) {
		t.Fatalf("AddServer of b (12) after it left: %v, want ErrStaleIncarnation", err)
	}
	if err := s.MarkNode(ctx, "b", NodeLeft); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		t.Helper()
		nodes, err := s.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.ID == "b" {
				return n.State
			}
		}
		return ""
	}
	if stale, err := s.SetNodeStateFor(ctx, NodeInfo{ID: "b", GRPCAddr: "g", RaftAddr: "r", State: NodeUp}, 12); err != nil || !stale || state() != NodeLeft {
		t.Fatalf("b (12) announcing itself up after it left: stale %v %v, state %q", stale, err, state())
	}
	if stale, err := s.SetNodeStateFor(ctx, NodeInfo{ID: "b", GRPCAddr: "g", RaftAddr: "r", State: NodeUp}, 13); err != nil || stale || state() != NodeUp {
		t.Fatalf("b (13) announcing itself up: stale %v %v, state %q", stale, err, state())
	}
}

// A move to a node that the newest ring epoch no longer has does not take
// effect: a leaving node's replica, once it has applied its leave's epoch,
// lists every shard it holds — none can arrive after.
func TestShardMoveToNodeOutOfRingRefused(t *testing.T) {
	c := NewTestCluster(t, 1, 0)
	s := c.WaitForLeader(10 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	if _, _, _, err := s.RegisterShard(ctx, "k=1", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRing(ctx, []RingNode{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRing(ctx, []RingNode{{ID: "a", Weight: 1}}); err != nil { // b leaves
		t.Fatal(err)
	}
	if holder, _, err := s.MoveShard(ctx, "k=1", "a", "b", 0); err != nil || holder != "a" {
		t.Fatalf("a move to b after b left the ring: holder %q %v, want a", holder, err)
	}
	if holder, _, err := s.MoveShard(ctx, "k=1", "a", "a", 0); err != nil || holder != "a" {
		t.Fatalf("reading the holder through the log: %q %v", holder, err)
	}
	if _, err := s.SetRing(ctx, []RingNode{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}}); err != nil { // b is back
		t.Fatal(err)
	}
	if holder, _, err := s.MoveShard(ctx, "k=1", "a", "b", 0); err != nil || holder != "b" {
		t.Fatalf("a move to b in the ring: holder %q %v, want b", holder, err)
	}
}

// With a Probe, a voter killed a moment ago — before any heartbeat to it
// has failed — already counts as dead: removing another voter is refused.
func TestRemoveProbeSeesDeathAtOnce(t *testing.T) {
	var cp atomic.Pointer[TestCluster]
	probes := 0
	var mu sync.Mutex
	c := NewTestCluster(t, 3, 0, withSchema, func(cfg *Config) {
		cfg.Probe = func(ctx context.Context, id string) bool {
			mu.Lock()
			probes++
			mu.Unlock()
			c := cp.Load()
			return c == nil || c.Node(id) != nil
		}
	})
	cp.Store(c)
	leader := c.WaitForLeader(10 * time.Second)
	followers := c.Followers()
	c.KillNode(followers[0])
	err := leader.Remove(ctxT(t, 30*time.Second), followers[1])
	if !errors.Is(err, ErrWouldLoseQuorum) {
		t.Fatalf("removing %s right after %s died: %v, want ErrWouldLoseQuorum", followers[1], followers[0], err)
	}
	mu.Lock()
	defer mu.Unlock()
	if probes == 0 {
		t.Fatal("the probe was never called")
	}
}

// A dry run makes the checks and changes nothing.
func TestRemoveDryRun(t *testing.T) {
	c := NewTestCluster(t, 3, 0, withSchema)
	followers := c.Followers()
	c.KillNode(followers[0])
	leader := waitUnreachable(t, c, followers[0])
	ctx := ctxT(t, 30*time.Second)
	if err := leader.RemoveWith(ctx, followers[1], RemoveOptions{DryRun: true}); !errors.Is(err, ErrWouldLoseQuorum) {
		t.Fatalf("dry run of a removal that loses the quorum: %v", err)
	}
	if err := leader.RemoveWith(ctx, followers[0], RemoveOptions{DryRun: true}); err != nil {
		t.Fatalf("dry run of removing the dead voter: %v", err)
	}
	waitRoles(t, c, []string{"n0", "n1", "n2"}, nil)
}

// TestMoveShardFencedToTheReceiversProcess: a move fenced to incarnation I
// of its receiver takes effect only while I is the receiver's newest
// recorded process; NodeIncarnation reads that record.
func TestMoveShardFencedToTheReceiversProcess(t *testing.T) {
	c := NewTestCluster(t, 1, 0, withSchema)
	s := c.WaitForLeader(10 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	join := func(node string, inc uint64) {
		t.Helper()
		epoch, nodes, err := s.Ring(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(nodes, func(n RingNode) bool { return n.ID == node }) {
			nodes = append(nodes, RingNode{ID: node, Weight: 1})
		}
		if _, _, stale, err := s.ChangeRing(ctx, epoch, nodes, RingOp{Node: node, Incarnation: inc}); err != nil || stale {
			t.Fatalf("join of %s (%d): stale %v %v", node, inc, stale, err)
		}
	}
	join("a", 1)
	join("b", 10)
	if inc, err := s.NodeIncarnation(ctx, "b"); err != nil || inc != 10 {
		t.Fatalf("NodeIncarnation(b) = %d %v, want 10", inc, err)
	}
	if inc, err := s.NodeIncarnation(ctx, "nobody"); err != nil || inc != 0 {
		t.Fatalf("NodeIncarnation(nobody) = %d %v, want 0", inc, err)
	}
	if _, _, _, err := s.RegisterShard(ctx, "k=1", "a"); err != nil {
		t.Fatal(err)
	}
	// b restarts (11) after taking the stream: a move fenced to 10 fails.
	join("b", 11)
	if holder, _, err := s.MoveShard(ctx, "k=1", "a", "b", 10); err != nil || holder != "a" {
		t.Fatalf("move fenced to b's earlier process: holder %q %v, want a", holder, err)
	}
	if holder, _, err := s.MoveShard(ctx, "k=1", "a", "b", 11); err != nil || holder != "b" {
		t.Fatalf("move fenced to b's current process: holder %q %v, want b", holder, err)
	}
}

// TestExtraVoterDemoted: a leave that promoted its replacement and then
// could not remove its own voter (its deadline passed) leaves one voter
// too many; the keeper demotes one — the leaving node's first — back to
// the target.
func TestExtraVoterDemoted(t *testing.T) {
	c := NewTestCluster(t, 3, 1, withSchema)
	leader := c.WaitForLeader(10 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	leaving := c.Followers()[0]
	if err := leader.MarkNode(ctx, leaving, NodeLeaving); err != nil {
		t.Fatal(err)
	}
	// The first half of a live voter's removal: its replacement promoted.
	servers, err := leader.configuration()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(servers, func(s raft.Server) bool { return s.ID == "n3" })
	if i < 0 {
		t.Fatalf("n3 is not in the configuration %v", servers)
	}
	leader.memberMu.Lock()
	err = leader.promote(ctx, servers[i])
	leader.memberMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var voters []string
	for _, id := range []string{"n0", "n1", "n2", "n3"} {
		if id != leaving {
			voters = append(voters, id)
		}
	}
	leader.kickVoters()
	waitRoles(t, c, voters, []string{leaving})
}
