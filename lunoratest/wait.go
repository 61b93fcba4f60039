package lunoratest

import (
	"testing"
	"time"
)

// WaitFor calls cond until it returns nil and fails t with cond's last
// error if that has not happened within timeout. It polls, starting at 5ms
// and backing off to 100ms, so a test waits exactly as long as it must.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, err)
	}
}

// Poll is WaitFor returning cond's last error instead of failing a test;
// it returns nil as soon as cond does.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		if pause < 100*time.Millisecond {
			pause *= 2
		}
	}
}
