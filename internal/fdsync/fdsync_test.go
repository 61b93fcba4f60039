package fdsync

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// TestFdatasync: the pool and the fallback used when the pool cannot
// start (direct) give the same answers: success on a file, the thread's
// errno (fdatasync(2) of a pipe is EINVAL), an error on a closed file.
func TestFdatasync(t *testing.T) {
	for name, do := range map[string]func(*os.File) error{"pool": Fdatasync, "direct": direct} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			f, err := os.Create(filepath.Join(dir, "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString("durable"); err != nil {
				t.Fatal(err)
			}
			if err := do(f); err != nil {
				t.Fatalf("fdatasync of a regular file: %v", err)
			}
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			if err := do(w); !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("fdatasync of a pipe: %v, want EINVAL", err)
			}
			closed, err := os.Create(filepath.Join(dir, "closed"))
			if err != nil {
				t.Fatal(err)
			}
			closed.Close()
			if err := do(closed); err == nil {
				t.Fatal("fdatasync of a closed file succeeded")
			}
		})
	}
}

// TestFdatasyncConcurrent: many more callers than threads, each call
// answered once and with its own result (a pipe fails, files succeed).
func TestFdatasyncConcurrent(t *testing.T) {
	dir := t.TempDir()
	var files []*os.File
	for i := range 10 {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	_, pipe, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()
	var wg sync.WaitGroup
	for g := range 4 * Threads {
		wg.Go(func() {
			for i := range 20 {
				if g%7 == 0 {
					if err := Fdatasync(pipe); !errors.Is(err, syscall.EINVAL) {
						t.Errorf("pipe: %v", err)
						return
					}
					continue
				}
				f := files[(g+i)%len(files)]
				if _, err := f.WriteString("x"); err != nil {
					t.Error(err)
					return
				}
				if err := Fdatasync(f); err != nil {
					t.Errorf("file: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	left := len(waiting)
	mu.Unlock()
	if left != 0 {
		t.Fatalf("%d calls still waiting after every caller returned", left)
	}
}
