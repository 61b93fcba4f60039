//go:build !linux

package lunoratest

import "os/exec"

// startCommand starts cmd. Outside Linux there is no parent-death signal:
// a test binary killed by a timeout leaves its processes running.
func startCommand(cmd *exec.Cmd) error { return cmd.Start() }
