package placement_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lunora/lunora/placement"
)

func mustRing(t testing.TB, spec string) *placement.Ring {
	t.Helper()
	r, err := placement.NewRing(parseMembers(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// parseMembers reads "a b:2 c" as a:1 b:2 c:1.
func parseMembers(t testing.TB, spec string) []placement.Member {
	t.Helper()
	var ms []placement.Member
	for _, f := range strings.Fields(spec) {
		id, w, ok := strings.Cut(f, ":")
		m := placement.Member{ID: placement.NodeID(id), Weight: 1}
		if ok {
			if _, err := fmt.Sscan(w, &m.Weight); err != nil {
				t.Fatalf("bad weight in %q: %v", f, err)
			}
		}
		ms = append(ms, m)
	}
	return ms
}

func TestNewRingValidation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []placement.Member
		want    error
		msg     string
	}{
		{"nil", nil, placement.ErrNoMembers, "at least one member"},
		{"empty ID", []placement.Member{{"a", 1}, {"", 1}}, placement.ErrEmptyNodeID, "member 1"},
		{"duplicate", []placement.Member{{"a", 1}, {"b", 1}, {"a", 2}}, placement.ErrDuplicateNode, `"a" is member 0 and member 2`},
		{"zero weight", []placement.Member{{"a", 0}}, placement.ErrInvalidWeight, `member 0 ("a") has weight 0, want 1..1048576`},
		{"negative weight", []placement.Member{{"a", 1}, {"b", -3}}, placement.ErrInvalidWeight, "weight -3"},
		{"huge weight", []placement.Member{{"a", placement.MaxWeight + 1}}, placement.ErrInvalidWeight, "weight 1048577"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := placement.NewRing(tc.members)
			if !errors.Is(err, tc.want) || r != nil {
				t.Fatalf("NewRing = %v, %v; want nil, %v", r, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
	if _, err := placement.NewRing([]placement.Member{{"a", 1}, {"b", placement.MaxWeight}}); err != nil {
		t.Errorf("weights 1 and MaxWeight: %v", err)
	}
}

func TestRingAccessors(t *testing.T) {
	in := parseMembers(t, "c:3 a b:2")
	r, err := placement.NewRing(in)
	if err != nil {
		t.Fatal(err)
	}
	in[0].ID = "mutated" // the ring keeps its own copy
	if got, want := r.Nodes(), []placement.NodeID{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("Nodes = %v, want %v", got, want)
	}
	r.Nodes()[0] = "mutated"
	if got, want := r.Members(), parseMembers(t, "a b:2 c:3"); !slices.Equal(got, want) {
		t.Errorf("Members = %v, want %v", got, want)
	}
	if r.Len() != 3 {
		t.Errorf("Len = %d, want 3", r.Len())
	}

	var zero placement.Ring
	if zero.Owner("x") != "" || zero.Preference("x", 3) != nil || zero.Len() != 0 || len(zero.Nodes()) != 0 {
		t.Errorf("zero Ring is not empty")
	}
}

// TestMemberOrderIrrelevant: a ring is a set; the order members are listed
// in (say, the order nodes joined) must not change placement.
func TestMemberOrderIrrelevant(t *testing.T) {
	ms := parseMembers(t, "n1 n2:3 n3 n4:2 n5 n6 n7:5 n8")
	ref, _ := placement.NewRing(ms)
	rng := rand.New(rand.NewPCG(7, 7))
	for range 5 {
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		r, err := placement.NewRing(ms)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range roomIDs(2000) {
			if a, b := ref.Preference(id, 8), r.Preference(id, 8); !slices.Equal(a, b) {
				t.Fatalf("members %v: Preference(%q) = %v, want %v", ms, id, b, a)
			}
		}
	}
}

func TestPreference(t *testing.T) {
	for _, spec := range []string{"a b c d e f g h", "a b:2 c:3 d e:4 f g:2 h"} {
		r := mustRing(t, spec)
		for _, id := range roomIDs(3000) {
			all := r.Preference(id, 100)
			if len(all) != 8 {
				t.Fatalf("%s: Preference(%q, 100) has %d nodes, want 8", spec, id, len(all))
			}
			sorted := slices.Clone(all)
			slices.Sort(sorted)
			if !slices.Equal(sorted, r.Nodes()) {
				t.Fatalf("%s: Preference(%q) = %v is not a permutation of the nodes", spec, id, all)
			}
			if all[0] != r.Owner(id) {
				t.Fatalf("%s: Preference(%q)[0] = %s, Owner = %s", spec, id, all[0], r.Owner(id))
			}
			for n := 1; n <= 8; n++ {
				if p := r.Preference(id, n); !slices.Equal(p, all[:n]) {
					t.Fatalf("%s: Preference(%q, %d) = %v, want prefix of %v", spec, id, n, p, all)
				}
			}
			// The second choice is where the shard goes if the owner leaves.
			var rest []placement.Member
			for _, m := range r.Members() {
				if m.ID != all[0] {
					rest = append(rest, m)
				}
			}
			without, _ := placement.NewRing(rest)
			if got := without.Preference(id, 7); !slices.Equal(got, all[1:]) {
				t.Fatalf("%s: without %s, Preference(%q) = %v, want %v", spec, all[0], id, got, all[1:])
			}
		}
		if r.Preference("x", 0) != nil || r.Preference("x", -1) != nil {
			t.Errorf("Preference(n<1) is not nil")
		}
	}
}

// TestWeightsProportional: each node's share is weight/Σweight, within 3%
// of itself (≥ 4σ at 200,000 IDs for the smallest share here).
func TestWeightsProportional(t *testing.T) {
	for _, spec := range []string{"a b:2 c:3 d:4", "a:10 b:10 c:10 d:30", "a:1 b:1 c:1 d:1 e:1 f:1 g:1 h:8", "a:100 b:101 c:150 d:400 e:250"} {
		ms := parseMembers(t, spec)
		r := mustRing(t, spec)
		const count = 200_000
		got := map[placement.NodeID]int{}
		for _, id := range roomIDs(count) {
			got[r.Owner(id)]++
		}
		total := 0
		for _, m := range ms {
			total += m.Weight
		}
		for _, m := range ms {
			want := float64(count) * float64(m.Weight) / float64(total)
			if dev := float64(got[m.ID])/want - 1; dev > 0.03 || dev < -0.03 {
				t.Errorf("%s: %s owns %d, want %.0f ± 3%% (off by %+.2f%%)", spec, m.ID, got[m.ID], want, 100*dev)
			}
		}
	}
}

// TestWeightScaleInvariant: only weight ratios matter.
func TestWeightScaleInvariant(t *testing.T) {
	a, b := mustRing(t, "a b:2 c:3 d:7"), mustRing(t, "a:5 b:10 c:15 d:35")
	c, d := mustRing(t, "a b c d"), mustRing(t, "a:9 b:9 c:9 d:9")
	for _, id := range roomIDs(20_000) {
		if a.Owner(id) != b.Owner(id) || c.Owner(id) != d.Owner(id) {
			t.Fatalf("%q: scaled weights changed the owner", id)
		}
	}
}

// TestWeightChangeMovesOnlyThatNode: raising a node's weight moves shards
// only to it, lowering it only from it, and about the minimum.
func TestWeightChangeMovesOnlyThatNode(t *testing.T) {
	for _, tc := range []struct{ from, to, node string }{
		{"a b c d e f g h", "a b c:3 d e f g h", "c"},
		{"a b c:3 d e f g h", "a b c d e f g h", "c"},
		{"a:2 b:3 c:1 d:5", "a:2 b:3 c:4 d:5", "c"},
		{"a:2 b:3 c:4 d:5", "a:2 b:3 c:1 d:5", "c"},
	} {
		from, to := mustRing(t, tc.from), mustRing(t, tc.to)
		ids := roomIDs(100_000)
		moves := placement.Plan(from, to, ids)
		for _, m := range moves {
			if m.From != placement.NodeID(tc.node) && m.To != placement.NodeID(tc.node) {
				t.Fatalf("%s → %s: %v does not involve %s", tc.from, tc.to, m, tc.node)
			}
		}
		min := minimumMoveFraction(from, to)
		if got := float64(len(moves)) / float64(len(ids)); got > 1.1*min || got < 0.9*min {
			t.Errorf("%s → %s: moved %.4f, minimum %.4f", tc.from, tc.to, got, min)
		}
	}
}

// minimumMoveFraction is the least fraction of shards any placement must
// move between two rings: Σ max(0, share_from(n) - share_to(n)).
func minimumMoveFraction(from, to *placement.Ring) float64 {
	shares := func(r *placement.Ring) map[placement.NodeID]float64 {
		total, s := 0, map[placement.NodeID]float64{}
		for _, m := range r.Members() {
			total += m.Weight
		}
		for _, m := range r.Members() {
			s[m.ID] = float64(m.Weight) / float64(total)
		}
		return s
	}
	a, b := shares(from), shares(to)
	min := 0.0
	for id, s := range a {
		min += max(0, s-b[id])
	}
	return min
}

func TestPlanAndMoved(t *testing.T) {
	from, to := mustRing(t, "a b c d"), mustRing(t, "a b:2 d e f")
	ids := roomIDs(20_000)
	first := placement.Plan(from, to, ids)[0]
	ids = append(ids, first.ShardID) // a repeated ID gives a repeated move
	moves := placement.Plan(from, to, ids)
	j := 0
	for _, id := range ids {
		moved := placement.Moved(from, to, id)
		if moved != (from.Owner(id) != to.Owner(id)) {
			t.Fatalf("Moved(%q) = %v, owners %s → %s", id, moved, from.Owner(id), to.Owner(id))
		}
		if !moved {
			continue
		}
		if want := (placement.Move{ShardID: id, From: from.Owner(id), To: to.Owner(id)}); j >= len(moves) || moves[j] != want {
			t.Fatalf("Plan move %d is not %v", j, want)
		}
		j++
	}
	if j != len(moves) {
		t.Fatalf("Plan has %d moves, Moved says %d", len(moves), j)
	}
	if last := moves[len(moves)-1]; last != first {
		t.Errorf("repeated ID: last move %v, want %v", last, first)
	}
	if placement.Plan(from, from, ids) != nil || placement.Moved(to, to, "x") {
		t.Errorf("a ring against itself moves something")
	}
	same := mustRing(t, "d c b a")
	if len(placement.Plan(from, same, ids)) != 0 {
		t.Errorf("equal rings move something")
	}
}

func TestLookupsDoNotAllocate(t *testing.T) {
	from, to := mustRing(t, "a b c d"), mustRing(t, "a b:2 d e f")
	if n := testing.AllocsPerRun(100, func() { to.Owner("room_id=r1"); placement.Moved(from, to, "room_id=r1") }); n != 0 {
		t.Errorf("Owner+Moved allocate %.1f times per call", n)
	}
}

// TestConcurrentReads: a Ring is shared by every request goroutine of a
// gateway; under -race this checks that reads do not write.
func TestConcurrentReads(t *testing.T) {
	from, to := mustRing(t, "a b c d e"), mustRing(t, "a b:3 c d e f")
	ids := roomIDs(2000)
	want := make([][]placement.NodeID, len(ids))
	for i, id := range ids {
		want[i] = to.Preference(id, 3)
	}
	wantMoves := placement.Plan(from, to, ids)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range ids {
				i := (i + g*250) % len(ids)
				if to.Owner(ids[i]) != want[i][0] || !slices.Equal(to.Preference(ids[i], 3), want[i]) {
					errs <- fmt.Errorf("goroutine %d: %q placed differently", g, ids[i])
					return
				}
			}
			if !slices.Equal(placement.Plan(from, to, ids), wantMoves) {
				errs <- fmt.Errorf("goroutine %d: different plan", g)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRandomRingChanges walks a seeded random sequence of ring changes: one
// or several joins, leaves and weight changes at a time. Whatever changes,
// no shard moves between two nodes that are in both rings with the same
// weight; for a single change the moved fraction is the minimum, within 5σ.
func TestRandomRingChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	ids := roomIDs(10_000)
	ms := parseMembers(t, "n0 n1 n2 n3 n4")
	cur := mustRing(t, "n0 n1 n2 n3 n4")
	next := 5
	for step := range 150 {
		changes := 1
		if step%5 == 4 {
			changes = 2 + rng.IntN(3)
		}
		changed := map[placement.NodeID]bool{}
		for range changes {
			switch op := rng.IntN(3); {
			case op == 0 || len(ms) < 3: // join
				id := placement.NodeID(fmt.Sprintf("n%d", next))
				next++
				ms = append(ms, placement.Member{ID: id, Weight: 1 + rng.IntN(5)})
				changed[id] = true
			case op == 1: // leave
				i := rng.IntN(len(ms))
				changed[ms[i].ID] = true
				ms = slices.Delete(ms, i, i+1)
			default: // weight change
				i := rng.IntN(len(ms))
				ms[i].Weight = 1 + (ms[i].Weight+rng.IntN(4))%5
				changed[ms[i].ID] = true
			}
		}
		to, err := placement.NewRing(ms)
		if err != nil {
			t.Fatal(err)
		}
		moves := placement.Plan(cur, to, ids)
		for _, m := range moves {
			if !changed[m.From] && !changed[m.To] {
				t.Fatalf("step %d (%v → %v): %v moved between unchanged nodes", step, cur.Members(), ms, m)
			}
		}
		if changes == 1 {
			min := minimumMoveFraction(cur, to)
			got := float64(len(moves)) / float64(len(ids))
			if sigma := math.Sqrt(min * (1 - min) / float64(len(ids))); math.Abs(got-min) > 5*sigma+1e-9 {
				t.Errorf("step %d (%v → %v): moved %.4f, minimum %.4f", step, cur.Members(), ms, got, min)
			}
		}
		cur = to
	}
}
