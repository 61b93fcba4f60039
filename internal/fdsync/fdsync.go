// Package fdsync runs fdatasync(2) on threads outside the Go scheduler.
//
// A goroutine in a blocking system call keeps its scheduler P until the
// runtime's monitor notices and hands the P to another thread. On a small
// machine a node's durability round, which fdatasyncs several shards' logs
// at once, would so hold most of the Ps while the disk works, and runnable
// goroutines (requests, acknowledgements) would wait although CPU time was
// left unused (BENCHMARKS.md, "cgo and the Go scheduler"). Here the call
// runs on a POSIX thread of the package's own pool; the goroutine waits
// parked on a channel and its P runs other goroutines meanwhile.
package fdsync

/*
#cgo CFLAGS: -O2
#cgo LDFLAGS: -lpthread
#include "fdsync_shim.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Threads is the size of the pool: how many fdatasyncs run at once.
// Syncs of different files overlap on the device, so more at once take
// little longer than one (BENCHMARKS.md, "fdatasync off the Go
// scheduler"). LUNORA_FDSYNC_THREADS overrides it (for measurements).
var Threads = func() int {
	if v, err := strconv.Atoi(os.Getenv("LUNORA_FDSYNC_THREADS")); err == nil && v > 0 {
		return v
	}
	return 32
}()

var (
	startOnce sync.Once
	pool      *C.struct_fdsync_pool
	startErr  error

	mu      sync.Mutex
	next    uint64
	waiting = map[uint64]chan error{}
)

func start() {
	r, w, err := os.Pipe()
	if err != nil {
		startErr = fmt.Errorf("fdsync: completion pipe: %w", err)
		return
	}
	var cerr C.int
	// w.Fd() puts the write end in blocking mode, as the C threads want.
	p := C.fdsync_start(C.int(Threads), C.int(w.Fd()), &cerr)
	if p == nil {
		r.Close()
		w.Close()
		startErr = fmt.Errorf("fdsync: start %d threads: %w", Threads, syscall.Errno(cerr))
		return
	}
	pool = p
	// The write end stays open for the life of the process (the threads
	// write to it); keep its *os.File from being finalized.
	go deliver(r, w)
}

// deliver reads finished calls from the pipe and wakes their callers.
func deliver(r, w *os.File) {
	defer runtime.KeepAlive(w)
	var rec [unsafe.Sizeof(C.fdsync_done{})]byte
	for {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			panic(fmt.Sprintf("fdsync: read the completion pipe: %v", err))
		}
		token := binary.NativeEndian.Uint64(rec[0:8])
		errno := int64(binary.NativeEndian.Uint64(rec[8:16]))
		mu.Lock()
		ch := waiting[token]
		delete(waiting, token)
		mu.Unlock()
		var err error
		if errno != 0 {
			err = syscall.Errno(errno)
		}
		ch <- err
	}
}

// Fdatasync flushes f's data (and the metadata needed to read it back) to
// the device, as fdatasync(2), on a thread of the pool. The calling
// goroutine waits without holding a scheduler P.
func Fdatasync(f *os.File) error {
	startOnce.Do(start)
	if startErr != nil {
		// No pool (the threads could not be started): the call is as
		// durable on this goroutine, only without the scheduler benefit.
		return direct(f)
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ch := make(chan error, 1)
	mu.Lock()
	next++
	token := next
	waiting[token] = ch
	mu.Unlock()
	var syncErr error
	// The wait is inside Control: the descriptor cannot be closed (and
	// its number reused) before the thread is done with it.
	cerr := sc.Control(func(fd uintptr) {
		if rc := C.fdsync_submit(pool, C.int(fd), C.uint64_t(token)); rc != 0 {
			mu.Lock()
			delete(waiting, token)
			mu.Unlock()
			syncErr = syscall.Errno(rc)
			return
		}
		syncErr = <-ch
	})
	if cerr != nil {
		mu.Lock()
		delete(waiting, token)
		mu.Unlock()
		return cerr
	}
	return syncErr
}

func direct(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if cerr := sc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); cerr != nil {
		return cerr
	}
	return serr
}
