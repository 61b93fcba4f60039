//go:build !race

package shardhost_test

const raceEnabled = false
