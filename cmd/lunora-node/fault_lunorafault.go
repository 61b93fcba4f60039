//go:build lunorafault

package main

import (
	"log/slog"
	"os"
	"sync"
)

// faultHook is the crash tests' fault of LUNORA_FAULT=point (one of the
// handoff.Fault* points), compiled only with -tags lunorafault: the first
// time a handoff reaches point, the node logs it and that handoff stops
// there for good (the test then kills the process). Without LUNORA_FAULT
// there is no hook.
func faultHook(log *slog.Logger) func(point, shardID string) {
	point := os.Getenv("LUNORA_FAULT")
	if point == "" {
		return nil
	}
	log.Warn("LUNORA_FAULT: a crash-test fault point is armed", "point", point)
	var once sync.Once
	return func(at, shardID string) {
		if at != point {
			return
		}
		hit := false
		once.Do(func() { hit = true })
		if !hit {
			return
		}
		log.Error("LUNORA_FAULT: halted", "point", point, "shard", shardID)
		select {}
	}
}
