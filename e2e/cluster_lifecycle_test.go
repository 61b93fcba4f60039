package e2e_test

// Real-process regression tests for issue 10's availability problems:
// a shard a crash left with an unclean write-ahead log must still move
// (problem 1), a forward pointer must not outlive the registry (problem
// 4), and status must tell the truth (problem 5).

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/placement"
)

// ringOwner is the shard's owner on a ring of the given node IDs, all of
// weight 1 (what the nodes compute).
func ringOwner(t *testing.T, shardID string, ids ...string) string {
	t.Helper()
	ms := make([]placement.Member, len(ids))
	for i, id := range ids {
		ms[i] = placement.Member{ID: placement.NodeID(id), Weight: 1}
	}
	r, err := placement.NewRing(ms)
	if err != nil {
		t.Fatal(err)
	}
	return string(r.Owner(shardID))
}

// waitPlaced waits until every shard of keys is held by its owner on the
// ring of ids (the registry's holder, as every running node reads it).
func (rc *ringCluster) waitPlaced(t *testing.T, keys []string, ids ...string) {
	t.Helper()
	err := lunoratest.Poll(clusterTimeout, func() error {
		holders := rc.holders(t)
		for _, k := range keys {
			id := "k=" + k
			if want := ringOwner(t, id, ids...); holders[id] != want {
				return fmt.Errorf("shard %s is held by %q, its owner is %s", id, holders[id], want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fillKeys writes items 1..rows (value v) to the shards of keys through
// the gateway with workers callers and returns what each shard then holds.
func (rc *ringCluster) fillKeys(t *testing.T, ctx context.Context, keys []string, rows, workers int, v string) map[string][]int64 {
	t.Helper()
	want := map[string][]int64{}
	for _, k := range keys {
		for id := 1; id <= rows; id++ {
			want[k] = append(want[k], int64(id))
		}
	}
	if err := parallel(len(keys), workers, func(i int) error {
		for id := 1; id <= rows; id++ {
			if _, _, err := rc.put(ctx, keys[i], id, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return want
}

// TestClusterCrashedShardsMoveAfterRestart (issue 10, problem 1): a node
// is SIGKILLed right after writes, so its shards' write-ahead logs are not
// checkpointed, and restarted; nothing opens those shards before node 4
// joins and takes its share of them. Every share must move with every
// acknowledged row; then the node's graceful leave hands off the rest.
func TestClusterCrashedShardsMoveAfterRestart(t *testing.T) {
	rc := startRingCluster(t, 3, "-leave-timeout", "30s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*clusterTimeout)
	defer cancel()
	// Keys chosen so that n2 holds 24 shards, 8 of which node 4 will own,
	// and the other nodes 16.
	var keys, onN2 []string
	toN4, others := 0, 0
	for i := 0; len(onN2) < 24 || others < 16; i++ {
		k := fmt.Sprintf("w%04d", i)
		switch {
		case ringOwner(t, "k="+k, "n1", "n2", "n3") != "n2":
			if others == 16 {
				continue
			}
			others++
		case ringOwner(t, "k="+k, "n1", "n2", "n3", "n4") == "n4":
			if toN4 == 8 {
				continue
			}
			toN4++
			onN2 = append(onN2, k)
		default:
			if len(onN2)-toN4 == 16 {
				continue
			}
			onN2 = append(onN2, k)
		}
		keys = append(keys, k)
	}
	want := rc.fillKeys(t, ctx, keys, 3, 8, "v")
	rc.waitRing(t, 3)

	n2 := rc.Node("n2")
	unclean := 0
	n2.Kill()
	for _, k := range onN2 {
		if st, err := os.Stat(shardFile(n2.DataDir(), "k="+k) + "-wal"); err == nil && st.Size() > 0 {
			unclean++
		}
	}
	t.Logf("n2 killed holding %d shards, %d with a non-empty WAL", len(onN2), unclean)
	if unclean == 0 {
		t.Fatal("no shard on n2 was left with a WAL to recover; the test proves nothing")
	}
	n2.Restart()
	rc.waitRing(t, 3)

	// Node 4 joins; n2 must hand it the crashed shards it now owns.
	rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	rc.waitRing(t, 4)
	rc.waitPlaced(t, keys, "n1", "n2", "n3", "n4")
	t.Logf("%d of n2's crashed shards moved to n4", toN4)
	rc.checkAll(t, want)

	// A graceful leave of the restarted node hands everything off.
	start := time.Now()
	n2.Signal(syscall.SIGTERM)
	if _, ok := n2.Wait(clusterTimeout); !ok {
		t.Fatal("n2 did not exit after SIGTERM")
	}
	if strings.Contains(n2.Stderr(), "not handed off") || !strings.Contains(n2.Stderr(), "every shard handed off") {
		t.Fatalf("n2's leave did not hand off every shard:\n%s", n2.Stderr())
	}
	t.Logf("n2 left in %v", time.Since(start).Round(time.Millisecond))
	rc.waitRing(t, 3)
	rc.waitPlaced(t, keys, "n1", "n3", "n4")
	rc.checkAll(t, want)
}
