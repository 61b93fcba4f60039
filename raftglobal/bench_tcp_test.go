package raftglobal

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBenchWriteTCP measures the global tier's write path as deployed:
// three voters on loopback TCP, each with its own fsync'd raft-wal log and
// SQLite FSM, 64 concurrent clients each inserting one row per Write, with
// group commit on and then off in the same run. Skipped unless
// LUNORA_BENCH=1:
//
//	LUNORA_BENCH=1 go test -run TestBenchWriteTCP -v -timeout 300s ./raftglobal/
func TestBenchWriteTCP(t *testing.T) {
	if os.Getenv("LUNORA_BENCH") != "1" {
		t.Skip("set LUNORA_BENCH=1 to run the TCP write benchmark")
	}
	const clients = 64
	writes := 64 * 100
	if n, err := strconv.Atoi(os.Getenv("LUNORA_BENCH_WRITES")); err == nil && n > 0 {
		writes = n
	}
	type figures struct {
		perSec, p50, p99 float64
		entries          uint64
	}
	run := func(batching bool) figures {
		stores := startTCPCluster(t, 3, func(cfg *Config) { cfg.Batching = batching })
		leader := stores[0]
		ctx := ctxT(t, 120*time.Second)
		if _, err := leader.Write(ctx, Command{SQL: []string{"CREATE TABLE IF NOT EXISTS b (id INTEGER PRIMARY KEY, v TEXT)"}}); err == nil {
			t.Fatal("DDL through Write succeeded")
		}
		before := leader.Stats().LastIndex
		lat := make([]time.Duration, writes)
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < clients; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(writes) {
						return
					}
					t0 := time.Now()
					_, err := leader.Write(ctx, Command{SQL: []string{"INSERT INTO bench (v) VALUES (:v)"}, Args: map[string]any{"v": fmt.Sprintf("row-%d", i)}})
					lat[i] = time.Since(t0)
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		entries := leader.Stats().LastIndex - before
		slices.Sort(lat)
		return figures{
			perSec:  float64(writes) / elapsed.Seconds(),
			p50:     float64(lat[len(lat)/2].Microseconds()) / 1000,
			p99:     float64(lat[len(lat)*99/100].Microseconds()) / 1000,
			entries: entries,
		}
	}
	on := run(true)
	off := run(false)
	t.Logf("3 voters, loopback TCP, %d clients, %d single-row inserts each mode", clients, writes)
	t.Logf("%-12s %10s %9s %9s %14s", "group commit", "writes/s", "p50 ms", "p99 ms", "writes/entry")
	for _, r := range []struct {
		name string
		f    figures
	}{{"on", on}, {"off", off}} {
		t.Logf("%-12s %10.0f %9.2f %9.2f %14.1f", r.name, r.f.perSec, r.f.p50, r.f.p99, float64(writes)/float64(r.f.entries))
	}
	t.Logf("throughput on/off = %.2fx", on.perSec/off.perSec)
}

// startTCPCluster starts n voters on 127.0.0.1 with OS-picked ports: the
// first bootstraps alone, the others join it.
func startTCPCluster(t testing.TB, n int, configure func(*Config)) []*Store {
	t.Helper()
	var stores []*Store
	t.Cleanup(func() {
		for _, s := range stores {
			s.Close()
		}
	})
	ctx := ctxT(t, 30*time.Second)
	for i := 0; i < n; i++ {
		cfg := DefaultLocalConfig()
		cfg.NodeID = fmt.Sprintf("t%d", i)
		cfg.Dir = t.TempDir()
		cfg.BindAddr = "127.0.0.1:0"
		cfg.Schema = []string{"CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"}
		// Production timers: the benchmark is not about failover.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		cfg.CommitTimeout = 50 * time.Millisecond
		cfg.ApplyTimeout = 30 * time.Second
		if i == 0 {
			cfg.Bootstrap = []Server{{ID: cfg.NodeID}}
		}
		configure(&cfg)
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
		if i == 0 {
			waitFor(t, 10*time.Second, func() error {
				if !s.IsLeader() {
					return fmt.Errorf("%s is not leader yet", s.NodeID())
				}
				return s.leaderReady(ctx)
			})
			continue
		}
		if err := stores[0].Join(ctx, s.NodeID(), s.Addr(), true); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, func() error {
		for _, s := range stores {
			if s.AppliedIndex() < stores[0].AppliedIndex() {
				return fmt.Errorf("%s behind", s.NodeID())
			}
		}
		return nil
	})
	_ = context.Background
	return stores
}
