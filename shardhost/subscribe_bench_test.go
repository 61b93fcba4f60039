package shardhost_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
	"github.com/prometheus/client_golang/prometheus"
)

// TestSubscriptionBench prints figures, asserting none: commit-to-subscriber
// latency with 1,000 and 10,000 subscribers of one query on one shard, heap
// per subscription, and a node holding LUNORA_SUB_HOLD (default 100,000)
// subscriptions over 100 shards. Run it without -race:
//
//	LUNORA_SUB_BENCH=1 go test -run TestSubscriptionBench -v -timeout 600s ./shardhost/
func TestSubscriptionBench(t *testing.T) {
	if os.Getenv("LUNORA_SUB_BENCH") != "1" {
		t.Skip("set LUNORA_SUB_BENCH=1 to print subscription figures")
	}
	if raceEnabled {
		t.Skip("figures under the race detector mean nothing")
	}
	for _, n := range []int{1000, 10000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { benchFanOut(t, n, 200) })
	}
	hold := 100000
	if s := os.Getenv("LUNORA_SUB_HOLD"); s != "" {
		hold, _ = strconv.Atoi(s)
	}
	t.Run("hold", func(t *testing.T) { benchHold(t, hold, 100) })
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// benchFanOut subscribes n clients to messages:list (limit 50) of one room,
// then commits `commits` messages one at a time, each after every
// subscriber has seen the previous one.
func benchFanOut(t *testing.T, n, commits int) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) {
		c.Registerer = reg
		c.MaxSubscriptions = 1 << 20
	})
	const room = "bench"
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		mustSend(t, h, room, fmt.Sprint("seed ", i))
	}
	args := map[string]any{"room_id": room, "limit": int64(50)}
	before := heapAlloc()
	subs := make([]*shardhost.Subscription, n)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				s, err := h.Subscribe(ctx, "room_id="+room, "messages:list", args, 0)
				if err != nil {
					t.Error(err)
					return
				}
				subs[i] = s
			}
		}(w)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	subscribeTime := time.Since(start)
	perSub := float64(heapAlloc()-before) / float64(n)

	// Each reader records when it received each seq.
	type rec struct {
		seq uint64
		at  time.Time
	}
	recs := make([][]rec, n)
	var reached atomic.Int64 // readers that saw the target seq
	var target atomic.Uint64
	all := make(chan struct{}, 1)
	for i, s := range subs {
		recs[i] = make([]rec, 0, commits+1)
		wg.Add(1)
		go func(i int, s *shardhost.Subscription) {
			defer wg.Done()
			for u := range s.Updates() {
				now := time.Now()
				if u.Kind == shardhost.UpdateError {
					t.Errorf("subscriber %d: %v", i, u.Err)
					return
				}
				recs[i] = append(recs[i], rec{u.Seq, now})
				if u.Seq == target.Load() && reached.Add(1) == int64(n) {
					all <- struct{}{}
				}
			}
		}(i, s)
	}
	startAt := map[uint64]time.Time{}
	ackAt := map[uint64]time.Time{}
	var mutation []time.Duration
	for c := 0; c < commits; c++ {
		reached.Store(0)
		t0 := time.Now()
		// The seq is not known before the commit: set the expected one.
		target.Store(uint64(50 + c + 1))
		seq := mustSend(t, h, room, fmt.Sprint("m", c))
		t1 := time.Now()
		if seq != uint64(50+c+1) {
			t.Fatalf("seq %d, expected %d", seq, 50+c+1)
		}
		startAt[seq], ackAt[seq] = t0, t1
		mutation = append(mutation, t1.Sub(t0))
		<-all
	}
	for _, s := range subs {
		s.Close()
	}
	wg.Wait()
	var fromStart, fromAck []time.Duration
	for _, rs := range recs {
		for _, r := range rs {
			if t0, ok := startAt[r.seq]; ok {
				fromStart = append(fromStart, r.at.Sub(t0))
				d := r.at.Sub(ackAt[r.seq])
				if d < 0 {
					d = 0
				}
				fromAck = append(fromAck, d)
			}
		}
	}
	p := func(ds []time.Duration, q float64) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[int(float64(len(ds)-1)*q)].Round(time.Microsecond)
	}
	n50, n99 := histogramQuantile(t, reg, "lunora_subscription_notify_seconds", 0.5), histogramQuantile(t, reg, "lunora_subscription_notify_seconds", 0.99)
	t.Logf("%d subscribers of one query on one shard (%d sequential commits, synchronous=FULL, GOMAXPROCS=%d):", n, commits, runtime.GOMAXPROCS(0))
	t.Logf("  subscribe: %v for all (%v each); heap per subscription %.0f B", subscribeTime.Round(time.Millisecond), (subscribeTime / time.Duration(n)).Round(time.Microsecond), perSub)
	t.Logf("  mutation latency (baseline)        p50 %v p99 %v", p(mutation, 0.5), p(mutation, 0.99))
	t.Logf("  mutation start -> subscriber recv  p50 %v p99 %v (%d deliveries)", p(fromStart, 0.5), p(fromStart, 0.99), len(fromStart))
	t.Logf("  mutation ack   -> subscriber recv  p50 %v p99 %v", p(fromAck, 0.5), p(fromAck, 0.99))
	t.Logf("  commit -> queued to all (notify histogram, bucket estimate) p50 %.2fms p99 %.2fms", n50*1000, n99*1000)
	t.Logf("  re-runs %v, updates sent %v", metricValue(t, reg, "lunora_live_query_reruns_total"), metricValue(t, reg, "lunora_subscription_updates_total"))
}

// benchHold holds n subscriptions spread over `shards` shards (one shared
// query per shard) without reading them, and reports the heap they take.
func benchHold(t *testing.T, n, shards int) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) {
		c.Registerer = reg
		c.MaxSubscriptions = n
		c.Synchronous = "NORMAL"
	})
	ctx := context.Background()
	for s := 0; s < shards; s++ {
		mustSend(t, h, fmt.Sprint("room", s), "hello")
	}
	before := heapAlloc()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	subs := make([]*shardhost.Subscription, n)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				room := fmt.Sprint("room", i%shards)
				s, err := h.Subscribe(ctx, "room_id="+room, "messages:list", map[string]any{"room_id": room, "limit": int64(50)}, 0)
				if err != nil {
					failed.Add(1)
					continue
				}
				subs[i] = s
			}
		}(w)
	}
	wg.Wait()
	took := time.Since(start)
	perSub := float64(heapAlloc()-before) / float64(n)
	// One more subscription is refused at the limit.
	_, err := h.Subscribe(ctx, "room_id=room0", "messages:list", map[string]any{"room_id": "room0"}, 0)
	st, _ := h.Status(ctx)
	t.Logf("held %d subscriptions on %d shards (%d failed) in %v; heap per subscription %.0f B (%.0f MiB in all); active shards %d; one more: %v",
		n-int(failed.Load()), shards, failed.Load(), took.Round(time.Millisecond), perSub, perSub*float64(n)/(1<<20), st.ActiveShards, err)
	// A commit on a held shard still reaches all its subscribers.
	seq := mustSend(t, h, "room0", "after")
	for i := 0; i < n; i += shards {
		if subs[i] == nil {
			continue
		}
		for u := next(t, subs[i]); u.Seq < seq; u = next(t, subs[i]) {
		}
	}
	for _, s := range subs {
		if s != nil {
			s.Close()
		}
	}
}

// histogramQuantile estimates a quantile of a registered histogram by
// linear interpolation inside its buckets.
func histogramQuantile(t testing.TB, reg *prometheus.Registry, name string, q float64) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		hist := mf.GetMetric()[0].GetHistogram()
		total := float64(hist.GetSampleCount())
		if total == 0 {
			return 0
		}
		rank := q * total
		prevCount, prevBound := 0.0, 0.0
		for _, b := range hist.GetBucket() {
			c := float64(b.GetCumulativeCount())
			if c >= rank {
				if c == prevCount {
					return b.GetUpperBound()
				}
				return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/(c-prevCount)
			}
			prevCount, prevBound = c, b.GetUpperBound()
		}
		return prevBound
	}
	t.Fatalf("no metric %s", name)
	return 0
}
