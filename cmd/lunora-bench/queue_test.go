package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunQueue runs -mode queue briefly: an enqueue-only phase and a phase
// with 2 consumers, which acknowledge messages without errors.
func TestRunQueue(t *testing.T) {
	o, err := parseFlags([]string{"-mode", "queue", "-c", "8", "-shards", "4", "-consumers", "2", "-d", "500ms", "-warmup", "200ms", "-data", t.TempDir()}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := run(ctx, o, "lunora-bench (test)", &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	t.Log("\n" + out.String())
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "| queue bench") && (!strings.Contains(line, "| none |") || strings.Contains(line, "| 0 | 0 |")) {
			t.Errorf("a phase had errors or no messages: %s", line)
		}
	}
	for _, want := range []string{"| queue bench: enqueue only |", "| queue bench: 8 producers, 2 consumer(s) |", "× the enqueue-only phase"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "consumer errors") {
		t.Errorf("consumer errors:\n%s", out.String())
	}
}
