package shardhost_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/sqlitex"
	"github.com/prometheus/client_golang/prometheus"
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

// TestCleanCloseKeepsAnEmptyWALAndSkipsSyncs: a hibernated shard keeps its
// -wal, empty; its next activation needs no sync when its
// files are as the close left them, and does them all again when anything
// touched the files meanwhile (a write from outside, a new modification
// time), and after a restart.
func TestCleanCloseKeepsAnEmptyWALAndSkipsSyncs(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	cfg := func(c *shardhost.Config) {
		c.Dir = dir
		c.IdleTimeout = 50 * time.Millisecond
		c.Registerer = reg
	}
	h := newHost(t, cfg)
	ctx := context.Background()
	clean := func() float64 { return metricValue(t, reg, "lunora_shard_clean_activations_total") }
	activations := func() float64 { return metricValue(t, reg, "lunora_shard_activations_total") }
	path := shardhost.ShardPath(h, "room_id=r")
	hibernated := func() {
		t.Helper()
		waitActive(t, h, 0)
		st, err := os.Stat(path + "-wal")
		if err != nil || st.Size() != 0 {
			t.Fatalf("after a clean close the -wal should be there and empty: %v, %v", st, err)
		}
	}
	// activate runs one call that activates the shard and reports whether
	// that activation skipped its syncs.
	activate := func(call func()) bool {
		t.Helper()
		a0, c0 := activations(), clean()
		call()
		if a := activations(); a != a0+1 {
			t.Fatalf("%v activations, want %v", a, a0+1)
		}
		return clean() == c0+1
	}

	if activate(func() { send(ctx, h, "r", "a", "1") }) {
		t.Fatal("a new shard's activation skipped its syncs")
	}
	hibernated()
	if !activate(func() {
		if _, err := send(ctx, h, "r", "a", "2"); err != nil {
			t.Fatal(err)
		}
	}) {
		t.Fatal("the activation after a clean close synced again")
	}
	if n := count(t, h, "r"); n != 2 {
		t.Fatalf("%d messages, want 2", n)
	}
	hibernated()

	// A write from outside the host: the database file changed.
	c, err := sqlitex.Open(path, sqlitex.Options{Synchronous: "FULL", CacheKiB: 64, MaxSQLLen: 1 << 10, PersistWAL: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecSys("INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('outside', 1)"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if activate(func() { count(t, h, "r") }) {
		t.Fatal("the activation after a write from outside skipped its syncs")
	}
	hibernated()

	// Only the modification time changed.
	if err := os.Chtimes(path, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if activate(func() { count(t, h, "r") }) {
		t.Fatal("the activation after the file changed skipped its syncs")
	}
	hibernated()
	if !activate(func() { count(t, h, "r") }) {
		t.Fatal("the activation after a clean close synced again")
	}
	hibernated()

	// A new process knows nothing of the last one's closes.
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewRegistry()
	h = newHost(t, cfg)
	if activate(func() { count(t, h, "r") }) {
		t.Fatal("the first activation in a new process skipped its syncs")
	}
	if n := count(t, h, "r"); n != 2 {
		t.Fatalf("%d messages after a restart, want 2", n)
	}
}

// TestShutdownClosesEveryShard: Shutdown closes the files of every active
// shard, not only the first one it finds (it walked a list it was
// removing from), and each close leaves the shard clean: an empty -wal.
func TestShutdownClosesEveryShard(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) { c.IdleTimeout = time.Hour })
	ctx := context.Background()
	for i := range 5 {
		if _, err := send(ctx, h, fmt.Sprint("r", i), "a", "b"); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Dir(filepath.Dir(filepath.Dir(shardhost.ShardPath(h, "room_id=r0"))))
	openIn := func() []string {
		var out []string
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, dir) {
				out = append(out, l)
			}
		}
		return out
	}
	if n := len(openIn()); n < 5*3 {
		t.Fatalf("%d files open under %s before the shutdown, want at least 15", n, dir)
	}
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if open := openIn(); len(open) > 0 {
		t.Fatalf("after Shutdown %d shard files are still open: %v", len(open), open)
	}
	for i := range 5 {
		st, err := os.Stat(shardhost.ShardPath(h, fmt.Sprint("room_id=r", i)) + "-wal")
		if err != nil || st.Size() != 0 {
			t.Fatalf("shard r%d: -wal after Shutdown: %v, %v (want empty)", i, st, err)
		}
	}
}

// TestIdleShardShedsMemory: an active shard unused for ShedAfter closes
// its idle read connections, drops its writer's prepared statements and
// frees its page cache, stays active, and serves again (reopening a
// reader, preparing again) when used; shedding while requests run breaks
// nothing.
func TestIdleShardShedsMemory(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) {
		c.IdleTimeout = time.Hour // the janitor runs every second
		c.ShedAfter = 300 * time.Millisecond
		c.Registerer = reg
	})
	ctx := context.Background()
	path := shardhost.ShardPath(h, "room_id=r")
	filesOpen := func() int {
		n := 0
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && (l == path || l == path+"-wal") {
				n++
			}
		}
		return n
	}
	if _, err := send(ctx, h, "r", "a", "1"); err != nil {
		t.Fatal(err)
	}
	count(t, h, "r") // opens a reader
	withReader, mem := filesOpen(), shardhost.WriterMemory(h, "room_id=r")
	cache, stmts := mem.Cache, mem.Stmt
	if cache == 0 || stmts == 0 {
		t.Fatalf("the writer holds no page cache or no statements after a write: %+v", mem)
	}
	waitFor(t, 10*time.Second, func() error {
		if n := metricValue(t, reg, "lunora_shard_sheds_total"); n != 1 {
			return fmt.Errorf("%v sheds", n)
		}
		return nil
	})
	// The reader's -wal descriptor goes; SQLite keeps its database-file
	// descriptor for the next open while the writer holds locks on it.
	if n := filesOpen(); n >= withReader {
		t.Fatalf("%d descriptors on the shard's files after shedding, %d before: the reader should be closed", n, withReader)
	}
	// The writer drops its statements and page cache when it gets to it.
	waitFor(t, 10*time.Second, func() error {
		if m := shardhost.WriterMemory(h, "room_id=r"); m.Cache >= cache || m.Stmt >= stmts {
			return fmt.Errorf("writer page cache %d bytes, statements %d bytes after shedding; %d and %d before", m.Cache, m.Stmt, cache, stmts)
		}
		return nil
	})
	if n := count(t, h, "r"); n != 1 {
		t.Fatalf("%d messages after shedding, want 1", n)
	}
	if a := metricValue(t, reg, "lunora_shard_activations_total"); a != 1 {
		t.Fatalf("%v activations: shedding must not hibernate the shard", a)
	}

	// Shedding while requests run: writes and reads go on, each checked.
	reg2 := prometheus.NewRegistry()
	h2 := newHost(t, func(c *shardhost.Config) {
		c.IdleTimeout = time.Hour
		c.ShedAfter = time.Nanosecond // every janitor tick sheds every shard
		c.Registerer = reg2
	})
	// At least two janitor ticks, and until a shed has happened: a tick
	// that finds a shard used after its own clock reading leaves it alone,
	// which on a loaded machine can be every tick for a while.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			room := fmt.Sprint("s", w%2)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := send(ctx, h2, room, "a", fmt.Sprint(i)); err != nil {
					t.Error(err)
					return
				}
				if _, err := h2.Call(ctx, "room_id="+room, "messages:list", map[string]any{"room_id": room}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		d := time.Since(start)
		if d > 60*time.Second || (d > 2500*time.Millisecond && metricValue(t, reg2, "lunora_shard_sheds_total") >= 1) {
			break
		}
	}
	close(stop)
	wg.Wait()
	if n := metricValue(t, reg2, "lunora_shard_sheds_total"); n < 1 {
		t.Fatalf("%v sheds while the requests ran", n)
	}
}
