package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunGlobal runs -mode global briefly: two 3-voter clusters (batching on,
// then off) take users:register through node 1's gateway without errors.
func TestRunGlobal(t *testing.T) {
	o, err := parseFlags([]string{"-mode", "global", "-voters", "3", "-c", "4", "-d", "300ms", "-warmup", "100ms", "-data", t.TempDir()}, &bytes.Buffer{})
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
	for _, want := range []string{"| global users:register, batching on |", "| global users:register, batching off |", "global batching on / off = "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "| global") && (!strings.Contains(line, "| none |") || strings.Contains(line, "| 0 | 0 |")) {
			t.Errorf("a phase had errors or no calls: %s", line)
		}
	}
}
