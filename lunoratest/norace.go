//go:build !race

package lunoratest

const raceEnabled = false
