package router_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/node/nodetest"
	"google.golang.org/grpc/codes"
)

// The router against a real in-process cluster (node/nodetest): its nodes
// serve the node API on loopback gRPC, as lunora-node does.

func clusterCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func putItem(ctx context.Context, c *nodetest.Cluster, k string, id int64) error {
	_, err := c.Router.Call(ctx, nodetest.ShardID(k), "items:put", map[string]any{"k": k, "id": id, "v": id}, api.ReadOptions{})
	return err
}

func countItems(ctx context.Context, c *nodetest.Cluster, k string) (int, error) {
	res, err := c.Router.Call(ctx, nodetest.ShardID(k), "items:list", map[string]any{"k": k}, api.ReadOptions{})
	if err != nil {
		return 0, err
	}
	return len(res.Rows), nil
}

// TestRouterFollowsARingChange: right after a node joins, the router
// still routes with the old ring; a node's NOT_OWNER (or a shard moving)
// makes it refresh and retry, so writes to the shards that move succeed
// and the router ends at the new epoch.
func TestRouterFollowsARingChange(t *testing.T) {
	c := nodetest.Start(t, 3, nodetest.Config{})
	ctx := clusterCtx(t, 60*time.Second)
	before, after := []string{"n0", "n1", "n2"}, []string{"n0", "n1", "n2", "n3"}
	var moving []string
	for _, from := range before {
		moving = append(moving, nodetest.KeyMovedBy(before, after, from, "n3"))
	}
	for _, k := range moving {
		if err := putItem(ctx, c, k, 1); err != nil {
			t.Fatal(err)
		}
	}
	epoch := c.Router.Epoch()
	j := c.Join()
	c.WaitInRing(20*time.Second, j)
	for _, k := range moving {
		if err := putItem(ctx, c, k, 2); err != nil {
			t.Fatalf("write to %s, which the join moves to n3: %v", k, err)
		}
		if n, err := countItems(ctx, c, k); err != nil || n != 2 {
			t.Fatalf("%s: %d rows, %v", k, n, err)
		}
	}
	if c.Router.Epoch() <= epoch {
		t.Fatalf("the router is still at epoch %d", c.Router.Epoch())
	}
}

// TestRouterNodeDownFailsFastThenServes: the shards of a killed node fail
// at once with UNAVAILABLE naming it (a mutation is not retried once it
// may have been sent), and are served again soon after it restarts.
func TestRouterNodeDownFailsFastThenServes(t *testing.T) {
	c := nodetest.Start(t, 3, nodetest.Config{})
	ctx := clusterCtx(t, 60*time.Second)
	var k string
	for i := 0; ; i++ {
		if k = fmt.Sprintf("d%d", i); nodetest.Owner(nodetest.ShardID(k), "n0", "n1", "n2") == "n2" {
			break
		}
	}
	if err := putItem(ctx, c, k, 1); err != nil {
		t.Fatal(err)
	}
	c.Kill(2)
	for _, op := range []string{"write", "read"} {
		start := time.Now()
		var err error
		if op == "write" {
			err = putItem(ctx, c, k, 2)
		} else {
			_, err = countItems(ctx, c, k)
		}
		took := time.Since(start)
		r, meta := api.ReasonOf(err)
		if api.CodeOf(err) != codes.Unavailable || r != api.ReasonNodeDown || meta["node"] != "n2" {
			t.Fatalf("%s on a killed node's shard: %v (reason %q %v), want UNAVAILABLE NODE_DOWN naming n2", op, err, r, meta)
		}
		if took > 10*time.Second {
			t.Fatalf("%s on a killed node's shard failed after %v", op, took)
		}
	}
	c.Restart(2)
	up := time.Now()
	c.WaitFor(10*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		n, err := countItems(rctx, c, k)
		if err == nil && n != 1 {
			return fmt.Errorf("%d rows, want 1", n)
		}
		return err
	})
	t.Logf("served %v after the restart", time.Since(up).Round(time.Millisecond))
}

// TestRouterNoErrorDuringGracefulLeave: writers keep writing while a node
// leaves gracefully; every write is acknowledged (the router rides out
// NOT_OWNER and SHARD_MOVING) and every row is there afterwards.
func TestRouterNoErrorDuringGracefulLeave(t *testing.T) {
	c := nodetest.Start(t, 4, nodetest.Config{})
	ctx := clusterCtx(t, 90*time.Second)
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = fmt.Sprintf("g%d", i)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	written := map[string]int{}
	var errs []error
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := int64(1); ; id++ {
				select {
				case <-stop:
					return
				default:
				}
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := putItem(wctx, c, k, id)
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s/%d: %w", k, id, err))
				} else {
					written[k]++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	c.WaitFor(10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(written) < len(keys) {
			return fmt.Errorf("%d keys written", len(written))
		}
		return nil
	})
	left, err := c.Leave(ctx, 3)
	if err != nil || left != 0 {
		t.Fatalf("leave: %d shards not handed off, %v", left, err)
	}
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("a write failed during a graceful leave: %v", err)
	}
	for _, k := range keys {
		n, err := countItems(ctx, c, k)
		if err != nil || n != written[k] {
			t.Errorf("%s: %d rows, %d acknowledged, %v", k, n, written[k], err)
		}
	}
}
