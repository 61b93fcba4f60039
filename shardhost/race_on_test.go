//go:build race

package shardhost_test

const raceEnabled = true
