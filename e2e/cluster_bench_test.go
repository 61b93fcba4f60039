package e2e_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/placement"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/rpc"
)

// TestClusterRebalanceBench is the cluster's figures, not a timed test:
// it prints them. Run it with
//
//	LUNORA_CLUSTER_BENCH=1 go test -count=1 -timeout 1800s -run TestClusterRebalanceBench -v ./e2e/
//
// 1. Time to rebalance 10,000 shards (3 rows each) onto a fourth node.
// 2. Gateway overhead: queries per second through the gateway (public
// gRPC) against the same queries sent straight to each shard's owner
// (node gRPC), same shards, same callers, same run.
func TestClusterRebalanceBench(t *testing.T) {
	if os.Getenv("LUNORA_CLUSTER_BENCH") == "" {
		t.Skip("set LUNORA_CLUSTER_BENCH=1 to print the cluster figures")
	}
	shards := 10000
	if s := os.Getenv("LUNORA_CLUSTER_BENCH_SHARDS"); s != "" {
		fmt.Sscan(s, &shards)
	}
	rc := startRingCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	start := time.Now()
	keys, _ := rc.fill(t, ctx, "b%05d", shards, 3, 32, "0123456789abcdef")
	t.Logf("created %d shards (3 rows each) through the gateway in %v", shards, time.Since(start).Round(time.Millisecond))
	rc.waitRing(t, 3)
	before := rc.shardsPerNode(t)

	start = time.Now()
	rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	rc.waitRing(t, 4)
	took := time.Since(start)
	after := rc.shardsPerNode(t)
	t.Logf("FIGURE rebalance: node 4 joined and %d of %d shards moved to it in %v (%.0f shards/s), holders before %v after %v",
		after["n4"], shards, took.Round(time.Millisecond), float64(after["n4"])/took.Seconds(), before, after)

	// Gateway overhead.
	epoch := rc.waitRing(t, 4)
	ringInfo, err := rc.Nodes[0].Client().Ring(ctxT(t), epoch)
	if err != nil {
		t.Fatal(err)
	}
	members := make([]placement.Member, len(ringInfo.Nodes))
	direct := map[string]*rpc.NodeClient{}
	for i, n := range ringInfo.Nodes {
		members[i] = placement.Member{ID: placement.NodeID(n.ID), Weight: n.Weight}
		c, err := rpc.NewNodeClient(n.GRPCAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		direct[n.ID] = c
	}
	ring, err := placement.NewRing(members)
	if err != nil {
		t.Fatal(err)
	}
	gw := lunoratest.DialGRPC(t, rc.gw.GRPCAddr())
	const callers = 32
	const d = 5 * time.Second
	run := func(name string, call func(ctx context.Context, k string) error) float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		stop := time.Now().Add(d)
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := c; time.Now().Before(stop); i += callers {
					if err := call(ctx, keys[i%len(keys)]); err != nil {
						failed.Store(err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rate := float64(n.Load()) / d.Seconds()
		t.Logf("%s: %d queries in %v with %d callers: %.0f/s", name, n.Load(), d, callers, rate)
		return rate
	}
	viaGateway := func(ctx context.Context, k string) error {
		_, err := gw.Call(ctx, &lunorav1.CallRequest{Function: "items:list", Args: lunoratest.Args(map[string]any{"k": k})})
		return err
	}
	straight := func(ctx context.Context, k string) error {
		id := "k=" + k
		_, err := direct[string(ring.Owner(id))].Call(api.WithRingEpoch(ctx, epoch), id, "items:list", map[string]any{"k": k}, api.ReadOptions{})
		return err
	}
	// Warm-up: every shard queried once, so all are active on their
	// owners and both paths measure routing, not file opens.
	start = time.Now()
	if err := parallel(len(keys), callers, func(i int) error { return viaGateway(ctx, keys[i]) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("warm-up: every shard queried once in %v", time.Since(start).Round(time.Millisecond))
	a := run("straight to the owner", straight)
	b := run("through the gateway", viaGateway)
	a2 := run("straight to the owner (again)", straight)
	b2 := run("through the gateway (again)", viaGateway)
	t.Logf("FIGURE gateway overhead: through the gateway %.0f/s and %.0f/s vs straight to the owning node %.0f/s and %.0f/s → %.2f× of direct", b, b2, a, a2, (b+b2)/(a+a2))
}
