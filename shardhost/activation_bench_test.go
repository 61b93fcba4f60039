package shardhost_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
)

// TestActivationAtScale is a benchmark, not a timed test: how long a call
// to a hibernated shard takes (activation: open the file, check the
// schema, start the writer; then one read) with 1,000 shards on disk and
// with LUNORA_ACTIVATION_SHARDS (default 100,000), each in the same run,
// against the same call on a shard already active. It prints figures and
// asserts only that every call succeeded.
//
//	LUNORA_ACTIVATION_BENCH=1 go test -count=1 -timeout 3600s -run TestActivationAtScale -v ./shardhost/
//
// The shard files are in the OS page cache (nothing here can drop it), so
// these are warm-cache figures.
func TestActivationAtScale(t *testing.T) {
	if os.Getenv("LUNORA_ACTIVATION_BENCH") == "" {
		t.Skip("a benchmark: set LUNORA_ACTIVATION_BENCH=1 (creates 100,000 shard files, several GB)")
	}
	if raceEnabled {
		t.Skip("timings are meaningless under the race detector")
	}
	big := 100_000
	if s := os.Getenv("LUNORA_ACTIVATION_SHARDS"); s != "" {
		var err error
		if big, err = strconv.Atoi(s); err != nil || big < 1000 {
			t.Fatalf("LUNORA_ACTIVATION_SHARDS=%q: want a number ≥ 1000", s)
		}
	}
	for _, n := range []int{1000, big} {
		t.Run(fmt.Sprintf("shards=%d", n), func(t *testing.T) { activationAt(t, n) })
	}
}

func activationAt(t *testing.T, n int) {
	h := newHost(t, func(c *shardhost.Config) {
		c.IdleTimeout = 200 * time.Millisecond
		c.MaxActive = 512
	})
	start := time.Now()
	createShards(t, h, n, nil)
	t.Logf("%d shards created in %v (%.0f/s)", n, time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())
	waitActive(t, h, 0)

	// Calls to hibernated shards, one at a time, each a different shard
	// chosen at random; then the same calls to one active shard.
	samples := min(2000, n)
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	picked := map[int]bool{}
	var cold []time.Duration
	for len(cold) < samples {
		i := 1 + rng.IntN(n)
		if picked[i] {
			continue
		}
		picked[i] = true
		if len(cold)%400 == 0 {
			waitActive(t, h, 0) // keep every sampled shard hibernated
		}
		t0 := time.Now()
		if got := count(t, h, fmt.Sprintf("s%d", i)); got != 1 {
			t.Fatalf("shard s%d: %d messages, want 1", i, got)
		}
		cold = append(cold, time.Since(t0))
	}
	var warm []time.Duration
	count(t, h, "s1")
	for range samples {
		t0 := time.Now()
		count(t, h, "s1")
		warm = append(warm, time.Since(t0))
	}
	c, w := percentiles(cold), percentiles(warm)
	t.Logf("%d shards on disk: call to a hibernated shard p50 %v p99 %v max %v; to an active shard p50 %v p99 %v (%d calls each)",
		n, c[0], c[1], c[2], w[0], w[1], samples)
}

// createShards sends one message to each of the shards s1..sn, 8 at a
// time; each (shard number) is called every so often.
func createShards(t testing.TB, h *shardhost.Host, n int, each func(i int64)) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if _, err := send(context.Background(), h, fmt.Sprintf("s%d", i), "a", "b"); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if each != nil {
					each(i)
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		t.Fatal(err)
	}
}

// percentiles returns p50, p99 and the max of ds, rounded to µs.
func percentiles(ds []time.Duration) [3]time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Microsecond) }
	return [3]time.Duration{at(0.50), at(0.99), s[len(s)-1].Round(time.Microsecond)}
}
