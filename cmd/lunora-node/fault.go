//go:build !lunorafault

package main

import "log/slog"

// faultHook is the handoff's fault hook (node.ClusterConfig.Fault): none
// in a production build. A build with -tags lunorafault (the crash tests'
// binaries, lunoratest.Build) reads one from LUNORA_FAULT instead
// (fault_lunorafault.go).
func faultHook(*slog.Logger) func(point, shardID string) { return nil }
