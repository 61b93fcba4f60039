package lunoratest

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Processes are started from one goroutine locked to its OS thread for the
// life of the test binary, with PR_SET_PDEATHSIG: the kernel kills a
// process when the thread that forked it exits, so a test binary that dies
// (a -timeout panic, a crash) takes its processes with it instead of
// leaving them listening. A thread that never exits makes that signal mean
// "the test binary died" and nothing else.
var spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

func startCommand(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked, see above
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	spawner.reqs <- r
	return <-r.done
}
