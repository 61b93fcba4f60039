// Package lunoratest runs Lunora for tests: it builds the commands once per
// test binary and runs them as real processes (ready-line parsing, SIGKILL,
// SIGTERM, restart, logs on failure), or wires a whole dev node in-process.
//
// Everything here is exported, non-test code so that any package's tests
// can use it (ARCHITECTURE.md §11). Helpers take a testing.TB, fail it on
// their own errors and clean up with t.Cleanup.
package lunoratest
