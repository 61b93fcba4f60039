//go:build race

package lunoratest

// raceEnabled reports whether this binary was built with -race; Build then
// builds the commands with -race too, so data races inside the processes
// fail the tests that started them.
const raceEnabled = true
