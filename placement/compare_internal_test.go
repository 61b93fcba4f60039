package placement

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// The measurement behind DESIGN.md's choice of scheme: the same figures for
// a classic consistent-hash ring with V virtual nodes per node (same hash
// functions, binary search on the sorted points). Opt-in, it takes minutes:
//
//	LUNORA_PLACEMENT_COMPARE=1 go test -run TestCompareVnodeRing -v ./placement/
//	go test -run '^$' -bench 'Owner' ./placement/
func TestCompareVnodeRing(t *testing.T) {
	if os.Getenv("LUNORA_PLACEMENT_COMPARE") != "1" {
		t.Skip("set LUNORA_PLACEMENT_COMPARE=1 to measure the virtual-node ring")
	}
	const count = 1_000_000
	keys := make([]uint64, count)
	for i := range keys {
		keys[i] = hashString(fmt.Sprintf("room_id=r%d", i))
	}
	for _, v := range []int{100, 256, 1000, 4000} {
		worstBal, worstMove := 0.0, 0.0
		worstBalN, worstMoveN := 0, 0
		for n := 3; n <= 64; n++ {
			ring, joined := newVnodeRing(n, v), newVnodeRing(n+1, v)
			perNode := make([]int, n)
			moved := 0
			for _, k := range keys {
				o := ring.owner(k)
				perNode[o]++
				if joined.owner(k) != o {
					moved++
				}
			}
			if b := float64(slices.Max(perNode)) * float64(n) / count; b > worstBal {
				worstBal, worstBalN = b, n
			}
			if m := float64(moved) * float64(n+1) / count; m > worstMove {
				worstMove, worstMoveN = m, n
			}
		}
		t.Logf("vnode ring V=%d: worst max/mean %.4f at N=%d; worst join movement %.3f × 1/(N+1) at N=%d",
			v, worstBal, worstBalN, worstMove, worstMoveN)
	}
}

func BenchmarkVnodeOwner(b *testing.B) {
	for _, n := range []int{3, 16, 64} {
		for _, v := range []int{256, 1000} {
			b.Run(fmt.Sprintf("N=%d/V=%d", n, v), func(b *testing.B) {
				ring := newVnodeRing(n, v)
				ids := make([]string, 1024)
				for i := range ids {
					ids[i] = fmt.Sprintf("room_id=r%d", i*7919)
				}
				sink := 0
				for i := 0; b.Loop(); i++ {
					sink += ring.owner(hashString(ids[i&1023]))
				}
				_ = sink
			})
		}
	}
}

type vnodeRing struct {
	points []uint64 // sorted
	owners []int    // owners[i] is the node of points[i]
}

// newVnodeRing places V points for each of nodes n01..nNN (the IDs of the
// package's numbered test rings), node index i-1.
func newVnodeRing(n, v int) *vnodeRing {
	type point struct {
		p    uint64
		node int
	}
	ps := make([]point, 0, n*v)
	for i := range n {
		seed := hashString(fmt.Sprintf("n%02d", i+1))
		for j := range v {
			ps = append(ps, point{mix64(seed ^ mix64(uint64(j)+0x9E3779B97F4A7C15)), i})
		}
	}
	slices.SortFunc(ps, func(a, b point) int {
		if a.p != b.p {
			if a.p < b.p {
				return -1
			}
			return 1
		}
		return a.node - b.node
	})
	r := &vnodeRing{points: make([]uint64, len(ps)), owners: make([]int, len(ps))}
	for i, p := range ps {
		r.points[i], r.owners[i] = p.p, p.node
	}
	return r
}

// owner is the node of the first point at or after key, wrapping around.
func (r *vnodeRing) owner(key uint64) int {
	i, _ := slices.BinarySearch(r.points, key)
	if i == len(r.points) {
		i = 0
	}
	return r.owners[i]
}
