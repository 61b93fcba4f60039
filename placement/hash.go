package placement

import "math/bits"

// The hash functions below are part of the wire contract: every gateway and
// node must place a shard ID on the same node, whatever its process, Go
// version or CPU architecture. They therefore use only integer arithmetic
// with fixed constants (no maphash seed, no floating point), and
// TestGoldenOwners pins their output. Changing any constant here re-places
// almost every shard in a running cluster.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashString is FNV-1a 64 of s, finished with mix64. FNV-1a alone spreads
// the last bytes of similar IDs ("room_id=r41", "room_id=r42") poorly into
// the high bits; the mixer gives full avalanche.
func hashString(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return mix64(h)
}

// mix64 is Pelle Evensen's "moremur" 64-bit finaliser: a bijection with
// strong avalanche, also for low-entropy and sequential inputs.
func mix64(x uint64) uint64 {
	x ^= x >> 27
	x *= 0x3C79AC492BA7B653
	x ^= x >> 33
	x *= 0x1C69B3F74AC4AE35
	x ^= x >> 27
	return x
}

// nodeHash is the rendezvous hash of one (shard, node) pair, from the
// shard's key hash and the node's seed (hashString of its ID).
func nodeHash(key, seed uint64) uint64 {
	return mix64(key ^ seed)
}

// Weighted rendezvous hashing gives a shard to the node with the smallest
// -ln(u)/w, u = h/2^64 (the winner of a race of exponential clocks with rates
// w: node i wins with probability w_i/Σw). Any monotone stand-in for the
// logarithm keeps the "moves only to or from the changed node" property; its
// accuracy only decides how exactly shares follow weights. We use log2 in
// fixed point, from a table built with integer arithmetic, so that weighted
// placement is bit-for-bit the same on every architecture (math.Log is
// assembly on amd64 and pure Go, subject to FMA fusion, on arm64).
const (
	log2FracBits  = 32                   // fraction bits of the fixed-point -log2(u)
	log2TableBits = 10                   // table entries per octave: 1<<log2TableBits
	log2TableLen  = 1<<log2TableBits + 1 // plus the endpoint log2(2) = 1
)

// log2Table holds log2(1 + i/1024) in Q0.32 for i in 0..1024.
type log2Table [log2TableLen]uint64

// newLog2Table builds the table with integer arithmetic only.
func newLog2Table() *log2Table {
	var t log2Table
	for i := range t {
		// 1 + i/1024 in Q2.62.
		m := uint64(1)<<62 + uint64(i)<<(62-log2TableBits)
		t[i] = log2Q62(m)
	}
	return &t
}

// log2Q62 returns log2(m/2^62), rounded to Q0.32, for m in [2^62, 2^63]
// (a value in [1, 2]), by repeated squaring: squaring doubles the logarithm,
// and each time the square reaches 2 the next bit of the result is 1. The
// truncation of each square costs at most 2^-62 relative, which does not
// grow in the result, so 34 computed bits round correctly to 32.
func log2Q62(m uint64) uint64 {
	if m >= 1<<63 {
		return 1 << log2FracBits
	}
	const extra = 2
	var r uint64
	for range log2FracBits + extra {
		hi, lo := bits.Mul64(m, m)
		m = hi<<2 | lo>>62 // m*m in Q2.62: [1, 4)
		r <<= 1
		if m >= 1<<63 {
			r |= 1
			m >>= 1
		}
	}
	return (r + 1<<(extra-1)) >> extra
}

// negLog2Lower returns a lower bound of negLog2(h) from the table alone,
// cheaper than negLog2: most nodes are ruled out with it.
func (t *log2Table) negLog2Lower(h uint64) uint64 {
	lz := uint64(bits.LeadingZeros64(h | 1)) // h|1 ≥ h: its bound is lower still
	i := (h << lz >> (63 - log2TableBits)) & (1<<log2TableBits - 1)
	return (lz+1)<<log2FracBits - t[i+1]
}

// negLog2 returns -log2(h/2^64) in Q6.32, a value in (0, 64]; h == 0 is read
// as 1. It is monotone: a larger h never gives a larger result.
func (t *log2Table) negLog2(h uint64) uint64 {
	if h == 0 {
		h = 1
	}
	lz := uint64(bits.LeadingZeros64(h))
	m := h << lz // top bit set: m/2^63 in [1, 2)
	i := (m >> (63 - log2TableBits)) & (1<<log2TableBits - 1)
	frac := (m >> (63 - log2TableBits - 32)) & (1<<32 - 1)
	lo, hi := t[i], t[i+1]
	f := lo + ((hi-lo)*frac)>>32 // linear interpolation; (hi-lo) < 2^23
	// h/2^64 = (m/2^63) * 2^-(lz+1), so -log2 = lz+1 - log2(m/2^63).
	return (lz+1)<<log2FracBits - f
}
