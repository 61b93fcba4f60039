package shardhost_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
)

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func rssKiB(t testing.TB) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestManyShardsHibernate creates 20,000 shards, lets them hibernate, and
// checks that open files and RSS come back close to where they started.
// LUNORA_SHARDS overrides the count.
func TestManyShardsHibernate(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: creates 20,000 shard files")
	}
	if raceEnabled {
		t.Skip("memory figures are meaningless under the race detector; scripts/test runs this test without -race")
	}
	n := 20000
	if s := os.Getenv("LUNORA_SHARDS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	h := newHost(t, func(c *shardhost.Config) {
		c.IdleTimeout = 300 * time.Millisecond
		c.MaxActive = 2000
		c.Synchronous = "NORMAL" // durability is not what this test measures
	})
	ctx := context.Background()
	// Warm up: one shard through its whole life, so the baseline includes
	// what every shard shares (driver, pools, metrics).
	if _, err := send(ctx, h, "warm", "a", "b"); err != nil {
		t.Fatal(err)
	}
	waitActive(t, h, 0)
	runtime.GC()
	debug.FreeOSMemory()
	fd0, rss0 := openFDs(t), rssKiB(t)

	start := time.Now()
	peakFD := atomic.Int64{}
	createShards(t, h, n, func(i int64) {
		if i%1000 == 0 {
			if fd := int64(openFDs(t)); fd > peakFD.Load() {
				peakFD.Store(fd)
			}
		}
	})
	created := time.Since(start)
	st, _ := h.Status(ctx)
	rssPeak := rssKiB(t)
	if st.ShardsOnDisk != int64(n)+1 {
		t.Fatalf("ShardsOnDisk = %d, want %d", st.ShardsOnDisk, n+1)
	}
	if st.ActiveShards > 2000 {
		t.Fatalf("ActiveShards = %d over MaxActive 2000", st.ActiveShards)
	}
	waitActive(t, h, 0)
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("go heap in use %d KiB, sys %d KiB, goroutines %d", ms.HeapInuse>>10, ms.Sys>>10, runtime.NumGoroutine())
	fd1, rss1 := openFDs(t), rssKiB(t)
	t.Logf("%d shards created in %v (%.0f/s); open fds: start %d, peak %d, after hibernation %d; RSS KiB: start %d, peak %d, after hibernation %d",
		n, created.Round(time.Millisecond), float64(n)/created.Seconds(), fd0, peakFD.Load(), fd1, rss0, rssPeak, rss1)
	if fd1 > fd0+8 {
		t.Errorf("open fds after hibernation %d, started at %d", fd1, fd0)
	}
	if rss1 > rss0+64<<10 {
		t.Errorf("RSS after hibernation %d KiB, started at %d KiB: more than 64 MiB retained", rss1, rss0)
	}
	// A hibernated shard comes back with its row.
	if c := count(t, h, "s77"); c != 1 {
		t.Fatalf("s77 has %d rows", c)
	}
}

func waitActive(t testing.TB, h *shardhost.Host, want int64) {
	t.Helper()
	waitFor(t, 30*time.Second, func() error {
		st, _ := h.Status(context.Background())
		if st.ActiveShards != want {
			return fmt.Errorf("%d active, want %d: %s", st.ActiveShards, want, shardhost.DebugActors(h))
		}
		return nil
	})
}
