package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunInProcess runs every phase briefly against the in-process stack:
// the bench builds, serves, measures and reports without errors.
func TestRunInProcess(t *testing.T) {
	o, err := parseFlags([]string{"-c", "4", "-callers-per-conn", "2", "-shards", "2", "-d", "300ms", "-warmup", "100ms", "-data", t.TempDir()}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := run(ctx, o, "lunora-bench (test)", &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"| mutation messages:send |", "| query messages:list |", "| baseline sqlite INSERT (FULL", "lunora / baseline = "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| phase") && !strings.Contains(line, "| none |") {
			t.Errorf("a phase had errors or no result: %s", line)
		}
		if strings.HasPrefix(line, "| ") && strings.Contains(line, "| 0 | 0 |") {
			t.Errorf("a phase completed no calls: %s", line)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.quantile(c.q)
		if d := got - c.want; d < -c.want/100 || d > c.want/100 {
			t.Errorf("quantile(%v) = %v, want %v ±1%%", c.q, got, c.want)
		}
	}
	var m histogram
	m.merge(&h)
	m.record(time.Nanosecond)
	if m.n != 1001 || m.min != 1 || m.max != uint64(time.Millisecond) {
		t.Errorf("merged n=%d min=%d max=%d", m.n, m.min, m.max)
	}
}
