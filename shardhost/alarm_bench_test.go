package shardhost_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
)

// TestAlarmBenchChild is the node process of TestAlarmBench: it serves the
// alarms under LUNORA_ALARM_CHILD_DIR until none is left (then exits) or
// it is killed.
func TestAlarmBenchChild(t *testing.T) {
	dir := os.Getenv("LUNORA_ALARM_CHILD_DIR")
	if dir == "" {
		t.Skip("the child process of TestAlarmBench")
	}
	cfg := alarmConfig(t, dir)
	cfg.IdleTimeout = 200 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready", len(h.AlarmIndex()))
	for len(h.AlarmIndex()) > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	shutdown(t, h)
}

// TestAlarmBench (LUNORA_ALARM_BENCH=1): 10,000 alarms over 1,000 shards,
// due over a 20 s window, fired by a node process (this test binary run as
// TestAlarmBenchChild) whose shards hibernate between their alarms; the
// process is SIGKILLed half-way through and restarted. Every alarm must
// fire (the test fails otherwise); lateness (firing time − due time) and
// repeated firings are logged, not asserted (BENCHMARKS.md, "Alarms").
func TestAlarmBench(t *testing.T) {
	if os.Getenv("LUNORA_ALARM_BENCH") != "1" {
		t.Skip("set LUNORA_ALARM_BENCH=1")
	}
	alarmKillRun(t, 1000, 10, 15*time.Second, 20*time.Second, 2*time.Second)
}

// TestAlarmSurvivesSIGKILL is TestAlarmBench's small shape, run in the
// normal suite: 40 shards × 5 alarms, the node process SIGKILLed half-way.
func TestAlarmSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	alarmKillRun(t, 40, 5, 3*time.Second, 3*time.Second, 500*time.Millisecond)
}

// alarmKillRun schedules perShard alarms on each of shards shards, due
// over window starting lead from now, and serves them in a child process
// SIGKILLed at the middle of the window and restarted after downtime.
func alarmKillRun(t *testing.T, shards, perShard int, lead, window, downtime time.Duration) {
	dir := t.TempDir()
	t0 := time.Now().Add(lead).Truncate(100 * time.Millisecond)
	step := window.Milliseconds() / int64(perShard)

	// Schedule, in-process, then close the host.
	cfg := alarmConfig(t, dir)
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, shards)
	jobs := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				job := fmt.Sprint("j", i)
				// Shards' alarms interleave: shard i's first is due at
				// t0 + i*step/shards.
				first := t0.UnixMilli() + int64(i)*step/int64(shards)
				_, err := h.Call(context.Background(), "job="+job, "jobs:add_many", map[string]any{"job": job, "count": int64(perShard), "first": first, "step": step})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	setup := time.Now()
	for i := range shards {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	shutdown(t, h)
	t.Logf("scheduled %d alarms over %d shards in %v", shards*perShard, shards, time.Since(setup).Round(time.Millisecond))
	if time.Now().After(t0) {
		t.Fatalf("scheduling took past the first due time")
	}

	start := func() (*exec.Cmd, *bufio.Scanner) {
		args := []string{"-test.run=^TestAlarmBenchChild$"}
		if p := os.Getenv("LUNORA_ALARM_BENCH_PROFILE"); p != "" {
			args = append(args, "-test.cpuprofile="+p)
		}
		cmd, sc := startChild(t, "LUNORA_ALARM_CHILD_DIR="+dir, args...)
		if !sc.Scan() {
			t.Fatalf("child: no ready line: %v", sc.Err())
		}
		t.Logf("child %d: %s", cmd.Process.Pid, sc.Text())
		return cmd, sc
	}
	child, _ := start()
	killAt := t0.Add(window / 2)
	time.Sleep(time.Until(killAt))
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	killMS := time.Now().UnixMilli()
	time.Sleep(downtime)
	restartMS := time.Now().UnixMilli()
	child, sc := start()
	done := make(chan error, 1)
	go func() {
		for sc.Scan() {
		}
		done <- child.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("child after the restart: %v", err)
		}
	case <-time.After(3 * time.Minute):
		child.Process.Kill()
		t.Fatal("alarms still pending 3 minutes after the restart")
	}

	// Count every firing.
	h = openAlarmHost(t, alarmConfig(t, dir))
	seen := map[string]int{}
	var before, after, overdue []int64
	rows := 0
	for i := range shards {
		res, err := h.Exec(context.Background(), fmt.Sprint("job=j", i), "SELECT tag, at, due FROM fired", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Rows {
			rows++
			tag, at, due := r[0].(string), r[1].(int64), r[2].(int64)
			seen[tag]++
			late := at - due
			switch {
			case at < killMS:
				before = append(before, late)
			case due >= restartMS+1000:
				after = append(after, late)
			default:
				overdue = append(overdue, late)
			}
		}
	}
	lost := shards*perShard - len(seen)
	repeats := rows - len(seen)
	pct := func(xs []int64, p float64) int64 {
		if len(xs) == 0 {
			return 0
		}
		slices.Sort(xs)
		return xs[min(len(xs)-1, int(float64(len(xs))*p))]
	}
	t.Logf("alarms: %d scheduled, %d fired, %d lost, %d fired more than once", shards*perShard, len(seen), lost, repeats)
	t.Logf("before the SIGKILL: %d alarms, lateness p50 %d ms, p99 %d ms, max %d ms", len(before), pct(before, 0.5), pct(before, 0.99), pct(before, 1))
	t.Logf("due while down or in the restart's first second: %d alarms, lateness p50 %d ms, p99 %d ms, max %d ms (downtime %d ms)", len(overdue), pct(overdue, 0.5), pct(overdue, 0.99), pct(overdue, 1), restartMS-killMS)
	t.Logf("due after the restart: %d alarms, lateness p50 %d ms, p99 %d ms, max %d ms", len(after), pct(after, 0.5), pct(after, 0.99), pct(after, 1))
	if lost != 0 {
		t.Fatalf("%d alarms never fired", lost)
	}
	if len(before) == 0 || len(overdue)+len(after) == 0 {
		t.Fatalf("the SIGKILL did not land mid-run: %d alarms fired before it, %d after", len(before), len(overdue)+len(after))
	}
}
