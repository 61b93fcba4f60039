package placement_test

import (
	"fmt"
	"testing"

	"github.com/lunora/lunora/placement"
)

// go test -run '^$' -bench . -benchmem ./placement/
//
// Owner is the gateway's hot path: equal weights (the usual cluster), one
// node of a different weight, and weights 1..4 in turn (the slowest case).
func BenchmarkOwner(b *testing.B) {
	ids := benchIDs()
	for _, n := range []int{3, 16, 64} {
		for _, w := range []struct {
			name   string
			weight func(i int) int
		}{
			{"equal", func(int) int { return 1 }},
			{"one-lighter", func(i int) int { return 1 + min(i, 1) }}, // n01 weight 1, the rest 2
			{"mixed", func(i int) int { return 1 + i%4 }},
		} {
			b.Run(fmt.Sprintf("N=%d/weights=%s", n, w.name), func(b *testing.B) {
				var ms []placement.Member
				for i := range n {
					ms = append(ms, placement.Member{ID: nodeName(i + 1), Weight: w.weight(i)})
				}
				r, err := placement.NewRing(ms)
				if err != nil {
					b.Fatal(err)
				}
				var sink placement.NodeID
				for i := 0; b.Loop(); i++ {
					sink = r.Owner(ids[i&(len(ids)-1)])
				}
				_ = sink
			})
		}
	}
}

func BenchmarkPreference3(b *testing.B) {
	ids := benchIDs()
	for _, n := range []int{3, 16, 64} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			r := numberedRing(b, n)
			for i := 0; b.Loop(); i++ {
				r.Preference(ids[i&(len(ids)-1)], 3)
			}
		})
	}
}

func BenchmarkMoved(b *testing.B) {
	ids := benchIDs()
	for _, n := range []int{3, 16, 64} {
		b.Run(fmt.Sprintf("N=%d+1", n), func(b *testing.B) {
			from, to := numberedRing(b, n), numberedRing(b, n+1)
			for i := 0; b.Loop(); i++ {
				placement.Moved(from, to, ids[i&(len(ids)-1)])
			}
		})
	}
}

// benchIDs is a power-of-two set of realistic shard IDs, so that the
// benchmark does not measure fmt.
func benchIDs() []string {
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("room_id=r%d", i*7919)
	}
	return ids
}
