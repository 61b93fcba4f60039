package shardhost_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/sqlitex"
	"github.com/prometheus/client_golang/prometheus"
)

// TestActiveShardMemory (LUNORA_MEM_BENCH=1, without -race) measures the
// resident memory an active shard costs: N shards each take a mutation
// and a query (writer and one reader open, their caches warm) and stay
// active; RSS and the Go heap are read before and after, and again once
// every shard has been unused for ShedAfter (readers closed, statements
// and page caches freed, still active).
// LUNORA_MEM_CACHE_KIB sets the page cache per connection,
// LUNORA_MEM_SHARDS the count (default 3000), LUNORA_MEM_HEAP_LIMIT
// SQLite's soft heap limit in bytes (lunora-node -sqlite-heap-limit),
// LUNORA_MEM_PROFILE a file for a heap profile taken at the end.
func TestActiveShardMemory(t *testing.T) {
	if os.Getenv("LUNORA_MEM_BENCH") == "" {
		t.Skip("a measurement: LUNORA_MEM_BENCH=1")
	}
	if raceEnabled {
		t.Skip("memory figures are meaningless under the race detector")
	}
	n := 3000
	if s := os.Getenv("LUNORA_MEM_SHARDS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) {
		c.IdleTimeout = time.Hour
		c.ShedAfter = 20 * time.Second // after every shard was used and measured
		c.Registerer = reg
		c.MaxActive = n + 10
		c.Synchronous = "NORMAL"
		if s := os.Getenv("LUNORA_MEM_CACHE_KIB"); s != "" {
			c.CacheKiB, _ = strconv.Atoi(s)
		}
	})
	ctx := context.Background()
	if s := os.Getenv("LUNORA_MEM_HEAP_LIMIT"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		defer sqlitex.SetSoftHeapLimit(sqlitex.SetSoftHeapLimit(n))
	}
	if _, err := send(ctx, h, "warm", "a", "b"); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	rss0, heap0, sq0 := rssKiB(t), heapKiB(), sqlitex.MemoryUsed()/1024
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				room := fmt.Sprint("m", i)
				if _, err := send(ctx, h, room, "a", "hello"); err != nil {
					errs <- err
					return
				}
				if _, err := h.Call(ctx, "room_id="+room, "messages:list", map[string]any{"room_id": room}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	runtime.GC()
	debug.FreeOSMemory()
	rss1, heap1, sq1 := rssKiB(t), heapKiB(), sqlitex.MemoryUsed()/1024
	st, _ := h.Status(ctx)
	if active := int(st.ActiveShards) - 1; active < n { // the warm-up shard is active too
		t.Fatalf("%d of %d shards active: the open-file limit capped MaxActive (raise it: ulimit -n)", active, n)
	}
	report := func(when string, rss1, heap1, sq1 int64) {
		// Anonymous memory (Go, SQLite's allocations and the C
		// allocator's slack) and file-backed pages mapped in (each
		// active shard's -shm, the binary).
		var kinds []string
		if b, err := os.ReadFile("/proc/self/status"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "RssAnon") || strings.HasPrefix(l, "RssFile") {
					kinds = append(kinds, strings.Join(strings.Fields(l), " "))
				}
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("%s; goroutine stacks %d KiB", strings.Join(kinds, ", "), ms.StackInuse>>10)
		t.Logf("%d active shards, %s: RSS +%d KiB (%.0f KiB per shard), Go heap +%d KiB (%.1f KiB per shard), SQLite's allocations +%d KiB (%.0f KiB per shard); one shard's writer: %+v",
			n, when, rss1-rss0, float64(rss1-rss0)/float64(n), heap1-heap0, float64(heap1-heap0)/float64(n), sq1-sq0, float64(sq1-sq0)/float64(n), shardhost.WriterMemory(h, "room_id=m1"))
	}
	report("just used (writer and a reader open)", rss1, heap1, sq1)

	// Left alone for ShedAfter, every shard gives back its reader and its
	// page cache and stays active.
	waitFor(t, 2*time.Minute, func() error {
		if s := metricValue(t, reg, "lunora_shard_sheds_total"); s < float64(n+1) {
			return fmt.Errorf("%v of %d shards shed", s, n+1)
		}
		return nil
	})
	runtime.GC()
	debug.FreeOSMemory()
	sqlitex.TrimMemory() // as the janitor's next tick does
	if st, _ := h.Status(ctx); int(st.ActiveShards)-1 < n {
		t.Fatalf("%d of %d shards active after shedding", st.ActiveShards-1, n)
	}
	report("unused for ShedAfter (readers closed, page caches freed)", rssKiB(t), heapKiB(), sqlitex.MemoryUsed()/1024)
	if p := os.Getenv("LUNORA_MEM_PROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func heapKiB() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse / 1024)
}
