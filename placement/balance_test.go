package placement_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/lunora/lunora/placement"
)

// The acceptance figures (ARCHITECTURE.md §6), checked for every ring size
// N in 3..64 with equal weights:
//
//   - balance: max/mean shards per node ≤ 1.10;
//   - join: adding node N+1 moves at most 1.1/(N+1) of the shards, all of
//     them to the new node;
//   - removal: removing a node moves exactly the shards it owned.
//
// What runs where:
//
//	go test -race ./placement/            all N at 200,000 IDs, and N ∈ {3,16,64} at 1,000,000 (CI)
//	go test -short ./placement/           N ∈ {3,4,7,16,31,64} at 200,000 IDs
//	LUNORA_PLACEMENT_FULL=1 go test ...   all N at 1,000,000 IDs (the acceptance run)
//
// 200,000 IDs is enough for the bounds to be meaningful: at N=64 the
// expected share is 3,125 ± 56 (1σ), so 1.10 is 5.6σ above the mean, and the
// join bound is 5.6σ above the expected 3,077 moved shards.
const (
	maxOverMean  = 1.10
	joinSlack    = 1.10
	defaultIDs   = 200_000
	fullIDs      = 1_000_000
	minN, maxN   = 3, 64
	fullEnv      = "LUNORA_PLACEMENT_FULL"
	removalsSeed = 20260817
)

func TestBalanceAndMovement(t *testing.T) {
	all := rangeN(minN, maxN)
	switch {
	case os.Getenv(fullEnv) == "1":
		t.Run("ids=1000000", func(t *testing.T) { checkBalanceAndMovement(t, fullIDs, all) })
	case testing.Short():
		t.Run("ids=200000", func(t *testing.T) { checkBalanceAndMovement(t, defaultIDs, []int{3, 4, 7, 16, 31, 64}) })
	default:
		t.Run("ids=200000", func(t *testing.T) { checkBalanceAndMovement(t, defaultIDs, all) })
		t.Run("ids=1000000", func(t *testing.T) { checkBalanceAndMovement(t, fullIDs, []int{3, 16, 64}) })
	}
}

// checkBalanceAndMovement checks the three properties for each ring size in
// ns over count IDs "room_id=r0".."room_id=r<count-1>", and logs the worst
// figures (go test -v shows them).
func checkBalanceAndMovement(t *testing.T, count int, ns []int) {
	ids := roomIDs(count)
	var (
		worstBal, worstMove     float64
		worstBalN, worstMoveN   int
		rng                     = rand.New(rand.NewPCG(removalsSeed, 0))
		owners, joined, removed = make([]uint8, count), make([]uint8, count), make([]uint8, count)
		ownersN                 = 0 // the ring size owners currently holds
	)
	for _, n := range ns {
		ring := numberedRing(t, n)
		if ownersN != n {
			ownersOf(ring, ids, owners)
		}

		// Balance.
		perNode := make([]int, n+1)
		for _, o := range owners {
			perNode[o]++
		}
		mean := float64(count) / float64(n)
		maxCount := 0
		for _, c := range perNode[1:] {
			maxCount = max(maxCount, c)
		}
		if perNode[0] != 0 {
			t.Fatalf("N=%d: %d shards owned by no node", n, perNode[0])
		}
		bal := float64(maxCount) / mean
		if bal > maxOverMean {
			t.Errorf("N=%d: max/mean = %.4f, want ≤ %.2f", n, bal, maxOverMean)
		}
		if bal > worstBal {
			worstBal, worstBalN = bal, n
		}

		// Join: node n+1 joins n nodes.
		ownersOf(numberedRing(t, n+1), ids, joined)
		moved := 0
		for i := range ids {
			if joined[i] == owners[i] {
				continue
			}
			moved++
			if joined[i] != uint8(n+1) {
				t.Fatalf("N=%d: join of %s moved %s from %s to %s", n, nodeName(n+1), ids[i], nodeName(int(owners[i])), nodeName(int(joined[i])))
			}
		}
		frac, bound := float64(moved)/float64(count), joinSlack/float64(n+1)
		if frac > bound {
			t.Errorf("N=%d: join moved %.5f of shards, want ≤ %.5f", n, frac, bound)
		}
		if r := frac * float64(n+1); r > worstMove {
			worstMove, worstMoveN = r, n
		}

		// Removal of a seeded-random node: exactly its shards move.
		victim := 1 + rng.IntN(n)
		ownersOf(numberedRingWithout(t, n, victim), ids, removed)
		for i := range ids {
			if (removed[i] != owners[i]) != (owners[i] == uint8(victim)) {
				t.Fatalf("N=%d: removal of %s: %s went from %s to %s", n, nodeName(victim), ids[i], nodeName(int(owners[i])), nodeName(int(removed[i])))
			}
		}

		owners, joined = joined, owners
		ownersN = n + 1
	}
	t.Logf("worst max/mean %.4f at N=%d (bound %.2f)", worstBal, worstBalN, maxOverMean)
	t.Logf("worst join movement %.4f × 1/(N+1) at N=%d: moved %.5f, bound %.5f", worstMove, worstMoveN,
		worstMove/float64(worstMoveN+1), joinSlack/float64(worstMoveN+1))
}

func rangeN(lo, hi int) []int {
	var ns []int
	for n := lo; n <= hi; n++ {
		ns = append(ns, n)
	}
	return ns
}

func roomIDs(count int) []string {
	ids := make([]string, count)
	for i := range ids {
		ids[i] = fmt.Sprintf("room_id=r%d", i)
	}
	return ids
}

// nodeName is the ID of node i (1-based) in the numbered rings; two digits
// so that nodeIndex can read it back without a map.
func nodeName(i int) placement.NodeID { return placement.NodeID(fmt.Sprintf("n%02d", i)) }

func nodeIndex(id placement.NodeID) uint8 { return (id[1]-'0')*10 + id[2] - '0' }

// numberedRing is n01..nNN with weight 1.
func numberedRing(t testing.TB, n int) *placement.Ring {
	return numberedRingWithout(t, n, 0)
}

func numberedRingWithout(t testing.TB, n, skip int) *placement.Ring {
	t.Helper()
	var ms []placement.Member
	for i := 1; i <= n; i++ {
		if i != skip {
			ms = append(ms, placement.Member{ID: nodeName(i), Weight: 1})
		}
	}
	r, err := placement.NewRing(ms)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ownersOf fills dst[i] with the index of ids[i]'s owner, spreading the work
// over GOMAXPROCS goroutines (the ring is safe for concurrent reads).
func ownersOf(r *placement.Ring, ids []string, dst []uint8) {
	workers := runtime.GOMAXPROCS(0)
	chunk := (len(ids) + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < len(ids); lo += chunk {
		hi := min(lo+chunk, len(ids))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				dst[i] = nodeIndex(r.Owner(ids[i]))
			}
		})
	}
	wg.Wait()
}
