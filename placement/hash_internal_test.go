package placement

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHashStringIsFNV1aThenMix(t *testing.T) {
	for _, s := range []string{"", "a", "room_id=r42", "room_id=r43", "ünïcode=☃"} {
		f := fnv.New64a()
		f.Write([]byte(s))
		if got, want := hashString(s), mix64(f.Sum64()); got != want {
			t.Errorf("hashString(%q) = %#x, want mix64(FNV-1a) = %#x", s, got, want)
		}
	}
}

// TestHashPinned pins raw hash values; TestGoldenOwners pins what they mean.
func TestHashPinned(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want uint64
	}{
		{"", 0x12f02ed4a4aa4dc8},
		{"n1", 0xce5704a1ff87fc91},
		{"room_id=r42", 0xdc987680e0f3a00d},
	} {
		if got := hashString(tc.s); got != tc.want {
			t.Errorf("hashString(%q) = %#x, want %#x", tc.s, got, tc.want)
		}
	}
}

func TestLog2TableExact(t *testing.T) {
	tab := newLog2Table()
	for i, got := range tab {
		want := math.Log2(1+float64(i)/(1<<log2TableBits)) * (1 << log2FracBits)
		if d := math.Abs(float64(got) - want); d > 0.5+1e-3 {
			t.Errorf("table[%d] = %d, want %.3f (off by %.3f ulp)", i, got, want, d)
		}
	}
}

func TestNegLog2AccurateAndMonotone(t *testing.T) {
	tab := newLog2Table()
	rng := rand.New(rand.NewPCG(1, 2))
	hs := []uint64{0, 1, 2, 3, math.MaxUint64, math.MaxUint64 - 1, 1 << 63, 1<<63 - 1}
	for k := range 64 { // around every power of two and table segment boundary
		for _, d := range []int64{-2, -1, 0, 1, 2} {
			hs = append(hs, uint64(int64(1)<<k)+uint64(d))
		}
	}
	for i := range uint64(1 << log2TableBits) {
		hs = append(hs, (1<<63|i<<(63-log2TableBits))-1, 1<<63|i<<(63-log2TableBits))
	}
	for range 200_000 {
		hs = append(hs, rng.Uint64()>>rng.UintN(64))
	}
	slices.Sort(hs)
	prev := uint64(math.MaxUint64)
	for _, h := range hs {
		got := tab.negLog2(h)
		if got > prev {
			t.Fatalf("negLog2 not monotone at h=%#x: %d > %d", h, got, prev)
		}
		prev = got
		want := -math.Log2(float64(max(h, 1)) / (1 << 64))
		if d := math.Abs(float64(got)/(1<<log2FracBits) - want); d > 2e-7 {
			t.Fatalf("negLog2(%#x) = %.9f, want %.9f", h, float64(got)/(1<<log2FracBits), want)
		}
	}
	if got := tab.negLog2(0); got != 64<<log2FracBits {
		t.Errorf("negLog2(0) = %d, want 64<<32", got)
	}
	if bits.Len64(64<<log2FracBits)+bits.Len64(MaxWeight) > 64 {
		t.Errorf("score × weight may overflow 64 bits")
	}
}

// TestUniformFastPathMatchesWeightedOrder checks that the raw-hash order
// used on uniform rings is the weighted order when weights are equal: the
// property that keeps a weight change from moving shards between the nodes
// whose weight did not change.
func TestUniformFastPathMatchesWeightedOrder(t *testing.T) {
	var ms []Member
	for i := range 16 {
		ms = append(ms, Member{ID: NodeID(fmt.Sprintf("n%d", i)), Weight: 3})
	}
	fast, err := NewRing(ms)
	if err != nil {
		t.Fatal(err)
	}
	slow := *fast
	slow.uniform, slow.log2 = false, newLog2Table()
	for i := range 100_000 {
		id := fmt.Sprintf("room_id=r%d", i)
		if a, b := fast.Owner(id), slow.Owner(id); a != b {
			t.Fatalf("Owner(%q): uniform path %s, weighted path %s", id, a, b)
		}
		if i%100 == 0 {
			if a, b := fast.Preference(id, 16), slow.Preference(id, 16); !slices.Equal(a, b) {
				t.Fatalf("Preference(%q): uniform path %v, weighted path %v", id, a, b)
			}
		}
	}
}

func TestNegLog2LowerIsABound(t *testing.T) {
	tab := newLog2Table()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 1_000_000 {
		h := rng.Uint64() >> rng.UintN(64)
		if i < 4096 {
			h = uint64(i)
		}
		if lo, l := tab.negLog2Lower(h), tab.negLog2(h); lo > l {
			t.Fatalf("negLog2Lower(%#x) = %d > negLog2 = %d", h, lo, l)
		}
	}
}
