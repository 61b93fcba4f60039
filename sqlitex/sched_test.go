package sqlitex_test

import (
	"context"
	"database/sql/driver"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/sqlitex"
)

// TestCgoCallsDoNotStarveTheScheduler: with GOMAXPROCS=2 (this machine's
// size) and more goroutines in long SQLite calls than there are Ps — CPU
// bound statements, and commits that fsync — a goroutine that only wants
// a timer still runs on time. A cgo call that blocks is handed off like a
// system call (the runtime's monitor retakes its P), so Go code is never
// held behind SQLite; if it were, the probe would be late by whole
// statements. Figures: BENCHMARKS.md, "cgo and the Go
// scheduler (issue 14)".
func TestCgoCallsDoNotStarveTheScheduler(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	dir := t.TempDir()
	cpuBound := func(c *sqlitex.Conn, stop <-chan struct{}) (int, error) {
		n := 0
		for {
			select {
			case <-stop:
				return n, nil
			default:
			}
			// Some 100 ms or more of SQLite CPU in one call.
			if _, _, err := c.QueryRows(context.Background(), "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 500000) SELECT sum(i) FROM k", nil, sqlitex.Limits{MaxRows: 1, MaxBytes: 64}); err != nil {
				return n, err
			}
			n++
		}
	}
	for _, load := range []struct {
		name    string
		workers int
		assert  bool // false: a figure only (see below)
		run     func(c *sqlitex.Conn, stop <-chan struct{}) (int, error)
	}{
		// As many goroutines in CPU-bound SQLite calls as there are Ps:
		// without the hand-off the probe would have no P at all.
		{"CPU-bound statements, 2 goroutines", 2, true, cpuBound},
		// Four times as many: every one of them is an OS thread wanting a
		// core, so the probe's thread queues behind them in the kernel — a
		// figure of the machine, not of the Go scheduler.
		{"CPU-bound statements, 8 goroutines", 8, false, cpuBound},
		{"commits that fsync, 8 goroutines", 8, true, func(c *sqlitex.Conn, stop <-chan struct{}) (int, error) {
			n := 0
			for {
				select {
				case <-stop:
					return n, nil
				default:
				}
				if _, err := c.Exec(context.Background(), "INSERT INTO t(v) VALUES (?)", driver.NamedValue{Ordinal: 1, Value: int64(n)}); err != nil {
					return n, err
				}
				n++
			}
		}},
	} {
		t.Run(load.name, func(t *testing.T) {
			workers := load.workers
			conns := make([]*sqlitex.Conn, workers)
			for i := range conns {
				c, err := sqlitex.Open(filepath.Join(dir, fmt.Sprintf("%s-%d-%d.db", load.name[:3], workers, i)), sqlitex.Options{Synchronous: "FULL", CacheKiB: 1024, MaxSQLLen: 1 << 12})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Exec(context.Background(), "CREATE TABLE IF NOT EXISTS t(v)"); err != nil {
					t.Fatal(err)
				}
				conns[i] = c
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			calls := make([]int, workers)
			errs := make([]error, workers)
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					calls[i], errs[i] = load.run(c, stop)
				}()
			}
			// The probe: a 1 ms timer, 2 s long, measuring how late each
			// wake-up is.
			var late []time.Duration
			const tick = time.Millisecond
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				want := time.Now().Add(tick)
				time.Sleep(tick)
				late = append(late, max(time.Since(want), 0))
			}
			close(stop)
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			slices.Sort(late)
			q := func(p float64) time.Duration { return late[int(p*float64(len(late)-1))] }
			total := 0
			for _, n := range calls {
				total += n
			}
			t.Logf("GOMAXPROCS=2, %d goroutines in SQLite (%d calls in 2 s): probe lateness p50 %s, p99 %s, max %s over %d wake-ups",
				workers, total, q(0.5), q(0.99), late[len(late)-1], len(late))
			if total == 0 {
				t.Fatal("the load made no call")
			}
			// Starvation would hold the probe for whole SQLite calls (each
			// 50 ms or more here), so most wake-ups would be that late; the
			// tail is the kernel's and the machine's (other processes share
			// it), so only the median is held to a bound.
			if p50 := q(0.5); load.assert && p50 > 5*time.Millisecond {
				t.Errorf("the probe's median wake-up was %s late while SQLite ran: the scheduler waited for cgo", p50)
			}
		})
	}
}
