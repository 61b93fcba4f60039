package placement

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// NodeID names a node. It is stable across restarts (a restarted pod keeps
// its identity and so its place on the ring).
type NodeID string

// Member is one node of a ring with its relative capacity: a node of weight
// 2 receives twice the shards of a node of weight 1.
type Member struct {
	ID     NodeID
	Weight int
}

// MaxWeight is the largest weight a member may have. The bound keeps the
// fixed-point score comparisons in 64 bits and rejects nonsense early.
const MaxWeight = 1 << 20

// Errors returned by NewRing, wrapped with the offending member; test them
// with errors.Is.
var (
	ErrNoMembers     = errors.New("placement: a ring needs at least one member")
	ErrEmptyNodeID   = errors.New("placement: empty node ID")
	ErrDuplicateNode = errors.New("placement: duplicate node ID")
	ErrInvalidWeight = errors.New("placement: invalid weight")
)

// Ring places shard IDs on a fixed set of weighted nodes by weighted
// rendezvous (highest random weight) hashing: every node draws a
// pseudo-random score for the shard, scaled by its weight, and the best
// score owns it. See DESIGN.md.
//
// A Ring is immutable once built; all its methods are safe for concurrent
// use. The zero Ring has no nodes: Owner returns "" and Preference nil.
type Ring struct {
	ids     []NodeID // sorted; index i is the node everywhere below
	seeds   []uint64 // hashString(ids[i])
	weights []uint64
	uniform bool       // all weights equal: compare raw hashes
	log2    *log2Table // nil when uniform
}

// NewRing builds a ring from members, in any order: the same set of members
// always gives the same placement. IDs must be non-empty and distinct,
// weights in 1..MaxWeight.
func NewRing(members []Member) (*Ring, error) {
	if len(members) == 0 {
		return nil, ErrNoMembers
	}
	seen := make(map[NodeID]int, len(members))
	for i, m := range members {
		if m.ID == "" {
			return nil, fmt.Errorf("%w: member %d", ErrEmptyNodeID, i)
		}
		if j, dup := seen[m.ID]; dup {
			return nil, fmt.Errorf("%w: %q is member %d and member %d", ErrDuplicateNode, m.ID, j, i)
		}
		seen[m.ID] = i
		if m.Weight < 1 || m.Weight > MaxWeight {
			return nil, fmt.Errorf("%w: member %d (%q) has weight %d, want 1..%d", ErrInvalidWeight, i, m.ID, m.Weight, MaxWeight)
		}
	}
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b Member) int { return strings.Compare(string(a.ID), string(b.ID)) })

	r := &Ring{
		ids:     make([]NodeID, len(sorted)),
		seeds:   make([]uint64, len(sorted)),
		weights: make([]uint64, len(sorted)),
		uniform: true,
	}
	for i, m := range sorted {
		r.ids[i] = m.ID
		r.seeds[i] = hashString(string(m.ID))
		r.weights[i] = uint64(m.Weight)
		if m.Weight != sorted[0].Weight {
			r.uniform = false
		}
	}
	if !r.uniform {
		r.log2 = newLog2Table()
	}
	return r, nil
}

// Owner returns the node that owns shardID. It does not allocate.
func (r *Ring) Owner(shardID string) NodeID {
	return r.node(r.owner(hashString(shardID)))
}

// Preference returns up to n distinct nodes in the order the ring prefers
// them for shardID: the owner first, then the node that would own the shard
// if the owner left, and so on. It returns all nodes if n exceeds their
// number, and nil if n < 1.
func (r *Ring) Preference(shardID string, n int) []NodeID {
	n = min(n, len(r.ids))
	if n < 1 {
		return nil
	}
	key := hashString(shardID)
	var buf [8]candidate // n is usually a replication factor: no allocation
	top := buf[:0]
	if n > len(buf) {
		top = make([]candidate, 0, n)
	}
	for i, seed := range r.seeds {
		c := candidate{i: i, h: nodeHash(key, seed)}
		if !r.uniform {
			c.l = r.log2.negLog2(c.h)
		}
		if len(top) == n {
			if !r.before(c, top[n-1]) {
				continue
			}
			top = top[:n-1]
		}
		at := len(top)
		for at > 0 && r.before(c, top[at-1]) {
			at--
		}
		top = slices.Insert(top, at, c)
	}
	out := make([]NodeID, n)
	for i, c := range top {
		out[i] = r.ids[c.i]
	}
	return out
}

// Nodes returns the ring's node IDs, sorted. The slice is a copy.
func (r *Ring) Nodes() []NodeID {
	return slices.Clone(r.ids)
}

// Members returns the ring's members sorted by ID. The slice is a copy.
func (r *Ring) Members() []Member {
	out := make([]Member, len(r.ids))
	for i, id := range r.ids {
		out[i] = Member{ID: id, Weight: int(r.weights[i])}
	}
	return out
}

// Len returns the number of nodes.
func (r *Ring) Len() int {
	return len(r.ids)
}

func (r *Ring) node(i int) NodeID {
	if i < 0 {
		return ""
	}
	return r.ids[i]
}

// candidate is node i's draw for one shard: h its rendezvous hash and, on a
// weighted ring, l = -log2(h/2^64) in fixed point.
type candidate struct {
	i    int
	h, l uint64
}

// before is the ring's total order on candidates for one shard: smaller
// l/weight first (cross-multiplied: l < 2^39 and weight ≤ 2^20, no
// overflow), then larger h, then smaller ID. On a uniform ring l is not
// computed and the order is larger h first; because negLog2 is monotone the
// weighted order gives the same answer whenever two weights are equal,
// which is what keeps a weight change from moving shards between the other
// nodes.
func (r *Ring) before(a, b candidate) bool {
	if !r.uniform {
		x, y := a.l*r.weights[b.i], b.l*r.weights[a.i]
		if x != y {
			return x < y
		}
	}
	if a.h != b.h {
		return a.h > b.h
	}
	return a.i < b.i
}

// owner returns the index of the first node in the before order for the
// shard whose hashString is key, or -1 on an empty ring. It is the hot path:
// the same order as before, specialised so that it never allocates and
// computes a logarithm only when comparing nodes of different weights.
func (r *Ring) owner(key uint64) int {
	seeds := r.seeds
	if len(seeds) == 0 {
		return -1
	}
	best, bh := 0, nodeHash(key, seeds[0])
	if r.uniform {
		for i, seed := range seeds {
			if h := nodeHash(key, seed); h > bh {
				best, bh = i, h
			}
		}
		return best
	}
	weights, tab := r.weights[:len(seeds)], r.log2
	bw, bl, haveBL := weights[0], uint64(0), false
	for i, seed := range seeds {
		h, w := nodeHash(key, seed), weights[i]
		if w == bw {
			// Same weight: the order is larger h first (negLog2 is monotone).
			if h > bh {
				best, bh, haveBL = i, h, false
			}
			continue
		}
		if !haveBL {
			bl, haveBL = tab.negLog2(bh), true
		}
		if tab.negLog2Lower(h)*bw > bl*w {
			continue // cannot beat the best even at its lower bound
		}
		l := tab.negLog2(h)
		if x, y := l*bw, bl*w; x < y || (x == y && h > bh) {
			best, bh, bw, bl = i, h, w, l
		}
	}
	return best
}
