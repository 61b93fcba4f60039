package node_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/node/nodetest"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// The cluster protocols of node, on an in-process cluster (node/nodetest).

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func args(k string) map[string]any { return map[string]any{"k": k} }

// writeRows writes ids 1..n to key k through the gateway router.
func writeRows(t *testing.T, ctx context.Context, c *nodetest.Cluster, k string, n int) {
	t.Helper()
	for id := 1; id <= n; id++ {
		if _, err := c.Router.Call(ctx, nodetest.ShardID(k), "items:put", map[string]any{"k": k, "id": int64(id), "v": int64(id)}, api.ReadOptions{}); err != nil {
			t.Fatalf("write %s/%d: %v", k, id, err)
		}
	}
}

func rows(res *api.Result) int {
	if res == nil {
		return -1
	}
	return len(res.Rows)
}

func holder(ctx context.Context, c *nodetest.Cluster, k string) string {
	reg, err := c.Registry(ctx)
	if err != nil {
		return "?" + err.Error()
	}
	return reg[nodetest.ShardID(k)]
}

// someFollower returns the index of a running voter that is not the
// leader (a node whose node API can be cut without cutting off the
// leader's forwarding).
func someFollower(c *nodetest.Cluster) int {
	l := c.WaitForLeader(10 * time.Second)
	return (l + 1) % 3
}

var first3 = []string{"n0", "n1", "n2"}
var first4 = []string{"n0", "n1", "n2", "n3"}

// TestJoinHandsOffAndOldHolderForwards: when a node joins, the shards the
// ring gives it are handed off to it by their holder; the old holder's
// shard host keeps a forward pointer to the new holder, its node refuses
// the shard as NOT_OWNER naming the new owner, and the gateway reads every
// row from the new holder.
func TestJoinHandsOffAndOldHolderForwards(t *testing.T) {
	c := nodetest.Start(t, 3, nodetest.Config{})
	ctx := ctxT(t, 60*time.Second)
	from := c.Node(0).ID
	k := nodetest.KeyMovedBy(first3, first4, from, "n3")
	shard := nodetest.ShardID(k)
	writeRows(t, ctx, c, k, 5)
	if h := holder(ctx, c, k); h != from {
		t.Fatalf("%s is held by %q, want %s", shard, h, from)
	}

	j := c.Join()
	c.WaitInRing(20*time.Second, j)
	c.WaitFor(20*time.Second, func() error {
		if h := holder(ctx, c, k); h != "n3" {
			return fmt.Errorf("%s held by %s", shard, h)
		}
		return c.CheckOneCopy(ctx)
	})

	old := c.Node(0).Proc()
	_, err := old.Host.Call(ctx, shard, "items:list", args(k))
	if got := shardhost.HolderOf(err); got != "n3" {
		t.Fatalf("the old holder's shard host answers %v (holder %q), want a forward pointer to n3", err, got)
	}
	_, err = old.Node.Call(ctx, shard, "items:list", args(k), api.ReadOptions{})
	if r, meta := api.ReasonOf(err); r != api.ReasonNotOwner || meta["owner"] != "n3" {
		t.Fatalf("the old holder's node answers %v, want NOT_OWNER naming n3", err)
	}
	res, err := c.Router.Call(ctx, shard, "items:list", args(k), api.ReadOptions{})
	if err != nil || rows(res) != 5 {
		t.Fatalf("read through the gateway after the move: %d rows, %v", rows(res), err)
	}
}

// TestPullOnFirstAccess: a shard whose push failed (its holder could not
// reach the new owner when the ring changed) is pulled by the new owner
// on the first request for it, long before the next rebalance pass.
func TestPullOnFirstAccess(t *testing.T) {
	cc := node.ClusterConfig{RebalanceEvery: time.Hour}
	c := nodetest.Start(t, 3, nodetest.Config{Cluster: cc})
	ctx := ctxT(t, 60*time.Second)
	fi := someFollower(c)
	from := c.Node(fi).ID
	k := nodetest.KeyMovedBy(first3, first4, from, "n3")
	shard := nodetest.ShardID(k)
	writeRows(t, ctx, c, k, 3)

	// Cut the holder's node API off (Raft still reaches it, so it sees
	// the new epoch and tries to push, and fails).
	c.PartitionNodeAPI(fi)
	j := c.Join()
	c.WaitInRing(20*time.Second, j)
	c.WaitFor(20*time.Second, func() error {
		if c.Net.Stats().Cut == 0 {
			return errors.New("no push attempted yet")
		}
		if n := c.Node(fi).Proc().Host.MovesInFlight(); n > 0 {
			return fmt.Errorf("%d moves in flight", n)
		}
		return nil
	})
	if h := holder(ctx, c, k); h != from {
		t.Fatalf("%s moved to %s while its holder was cut off", shard, h)
	}
	c.Heal()

	start := time.Now()
	res, err := c.Node(j).Proc().Node.Call(ctx, shard, "items:list", args(k), api.ReadOptions{})
	if err != nil || rows(res) != 3 {
		t.Fatalf("first access on the new owner: %d rows, %v", rows(res), err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the first access took %v", d)
	}
	if h := holder(ctx, c, k); h != "n3" {
		t.Fatalf("after the pull %s is held by %s", shard, h)
	}
	c.WaitFor(10*time.Second, func() error { return c.CheckOneCopy(ctx) })
}

// TestNotOwnerWithStaleEpoch: a node asked (over the node network, as the
// gateway asks) for a shard another node owns answers UNAVAILABLE with
// reason NOT_OWNER, the owner and its own newer epoch; a request routed at
// an epoch the node has not reached waits for it, bounded by the caller.
func TestNotOwnerWithStaleEpoch(t *testing.T) {
	c := nodetest.Start(t, 3, nodetest.Config{})
	ctx := ctxT(t, 30*time.Second)
	var k string
	for i := 0; ; i++ {
		if k = fmt.Sprintf("k%d", i); nodetest.Owner(nodetest.ShardID(k), first3...) == "n1" {
			break
		}
	}
	ring, err := c.Node(0).Proc().Node.Ring(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Net.Peer("test", c.Node(0).GRPCAddr)
	_, err = p.Call(api.WithRingEpoch(ctx, 1), nodetest.ShardID(k), "items:list", args(k), api.ReadOptions{})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != codes.Unavailable || ae.Reason != api.ReasonNotOwner ||
		ae.Meta["owner"] != "n1" || ae.Meta["epoch"] != fmt.Sprint(ring.Epoch) {
		t.Fatalf("stale epoch: %#v, want NOT_OWNER naming n1 at epoch %d", err, ring.Epoch)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = p.Call(api.WithRingEpoch(short, ring.Epoch+100), nodetest.ShardID(k), "items:list", args(k), api.ReadOptions{})
	if api.CodeOf(err) != codes.Unavailable && api.CodeOf(err) != codes.DeadlineExceeded {
		t.Fatalf("epoch from the future: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("epoch from the future answered after %v, the caller allowed 300ms", d)
	}
}

// TestLeaveHandsOffEverythingAndLeavesRaft: a voter that leaves hands
// every shard it holds to its new owner, leaves the ring and the Raft
// group, a non-voter is promoted in its place, and no row is lost.
func TestLeaveHandsOffEverythingAndLeavesRaft(t *testing.T) {
	c := nodetest.Start(t, 4, nodetest.Config{})
	ctx := ctxT(t, 90*time.Second)
	keys := make([]string, 12)
	for i := range keys {
		keys[i] = fmt.Sprintf("l%d", i)
		writeRows(t, ctx, c, keys[i], 3)
	}
	fi := someFollower(c)
	id := c.Node(fi).ID
	reg, err := c.Registry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, h := range reg {
		if h == id {
			held++
		}
	}
	if held == 0 {
		t.Fatalf("%s holds none of the %d shards; the test proves nothing", id, len(reg))
	}

	left, err := c.Leave(ctx, fi)
	if err != nil || left != 0 {
		t.Fatalf("leave of %s: %d shards not handed off, %v", id, left, err)
	}
	reg, err = c.Registry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for s, h := range reg {
		if h == id {
			t.Errorf("%s still holds %s after leaving", id, s)
		}
	}
	c.WaitFor(20*time.Second, func() error { return c.CheckVoters(ctx) })
	c.WaitFor(20*time.Second, func() error { return c.CheckOneCopy(ctx) })
	servers, err := c.Node(c.WaitForLeader(10 * time.Second)).Proc().Global.Servers()
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, s := range servers {
		if s.ID == id {
			t.Fatalf("%s is still in the Raft group: %+v", id, servers)
		}
		if s.Voter {
			voters++
		}
	}
	if voters != 3 {
		t.Fatalf("%d voters after a voter left, want 3 (the non-voter promoted): %+v", voters, servers)
	}
	for _, k := range keys {
		res, err := c.Router.Call(ctx, nodetest.ShardID(k), "items:list", args(k), api.ReadOptions{})
		if err != nil || rows(res) != 3 {
			t.Errorf("%s after the leave: %d rows, %v", k, rows(res), err)
		}
	}
}

// TestPartitionedHolderUnavailableFastThenServes: when the ring gives a
// shard to a new node while its holder is partitioned away, the new owner
// answers UNAVAILABLE (NODE_DOWN, naming the holder) within about the
// network's unreachable bound — not the caller's whole deadline — and
// serves the shard, every row, once the partition heals.
func TestPartitionedHolderUnavailableFastThenServes(t *testing.T) {
	c := nodetest.Start(t, 3, nodetest.Config{})
	ctx := ctxT(t, 60*time.Second)
	fi := someFollower(c)
	from := c.Node(fi).ID
	k := nodetest.KeyMovedBy(first3, first4, from, "n3")
	shard := nodetest.ShardID(k)
	writeRows(t, ctx, c, k, 4)

	c.Partition(fi)
	j := c.Join()
	c.WaitInRing(20*time.Second, j)
	n3 := c.Node(j).Proc().Node
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := n3.Call(cctx, shard, "items:list", args(k), api.ReadOptions{})
	took := time.Since(start)
	r, meta := api.ReasonOf(err)
	if api.CodeOf(err) != codes.Unavailable || r != api.ReasonNodeDown || meta["node"] != from {
		t.Fatalf("a shard whose holder is partitioned away: %v (reason %q %v), want UNAVAILABLE NODE_DOWN naming %s", err, r, meta, from)
	}
	if bound := c.Net.UnreachableAfter + 2*time.Second; took > bound {
		t.Fatalf("answered after %v, want within %v", took, bound)
	}

	c.Heal()
	c.WaitFor(30*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		res, err := n3.Call(rctx, shard, "items:list", args(k), api.ReadOptions{})
		if err != nil {
			return err
		}
		if rows(res) != 4 {
			return fmt.Errorf("%d rows, want 4", rows(res))
		}
		return nil
	})
	c.WaitFor(20*time.Second, func() error { return c.CheckOneCopy(ctx) })
}
