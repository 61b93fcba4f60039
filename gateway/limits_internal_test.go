package gateway

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
)

// TestTokenBucketRefills drives the bucket with a fake clock: a burst, a
// refusal whose retry hint is the time to the next token, the refill, and
// idle clients dropped from the table.
func TestTokenBucketRefills(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RateLimit, cfg.RateBurst = 10, 5
	l, err := newClientLimits(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	take := func() error {
		release, err := l.admit("c", 0)
		if err == nil {
			release()
		}
		return err
	}
	for i := 0; i < 5; i++ {
		if err := take(); err != nil {
			t.Fatalf("burst request %d: %v", i+1, err)
		}
	}
	err = take()
	if !errors.Is(err, ErrRateLimited) {
		t.Fatalf("6th: %v", err)
	}
	if ra := asAPI(err).RetryAfter; ra != 100*time.Millisecond {
		t.Errorf("retry hint %v, want 100ms (one token at 10/s)", ra)
	}
	now = now.Add(250 * time.Millisecond) // 2.5 tokens
	for i := 0; i < 2; i++ {
		if err := take(); err != nil {
			t.Fatalf("after 250ms, request %d: %v", i+1, err)
		}
	}
	if err := take(); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third after 250ms: %v", err)
	} else if ra := asAPI(err).RetryAfter; ra != 50*time.Millisecond {
		t.Errorf("retry hint %v, want 50ms (half a token left)", ra)
	}
	now = now.Add(time.Hour) // full again, no more than the burst
	for i := 0; i < 5; i++ {
		if err := take(); err != nil {
			t.Fatalf("after an hour, request %d: %v", i+1, err)
		}
	}
	if err := take(); err == nil {
		t.Fatal("the bucket held more than its burst")
	}

	// A rate of one request a year still answers a sane retry hint.
	slow := DefaultConfig()
	slow.RateLimit, slow.RateBurst = 1.0/(365*24*3600), 1
	sl, err := newClientLimits(slow, nil)
	if err != nil {
		t.Fatal(err)
	}
	sl.allow("x")
	if err := sl.allow("x"); asAPI(err) == nil || asAPI(err).RetryAfter != 24*time.Hour {
		t.Errorf("a yearly rate: %v", err)
	}

	// Many clients come and go; once their buckets are full again and they
	// hold nothing, a sweep forgets them. One holding a socket stays.
	for i := 0; i < 1000; i++ {
		release, err := l.admit(fmt.Sprint("ip:", i), 0)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	held, err := l.admitSocket("holder")
	if err != nil {
		t.Fatal(err)
	}
	if n := l.clients(); n != 1002 {
		t.Fatalf("%d clients in the table, want 1002", n)
	}
	now = now.Add(time.Minute)
	// 1000 new clients touch every stripe (all but certainly), each
	// sweeping its stripe first.
	for i := 0; i < 1000; i++ {
		if err := l.allow(fmt.Sprint("new:", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.clients(); n != 1001 {
		t.Errorf("%d clients after the sweep, want the 1000 new ones and the holder", n)
	}
	held()
}

func asAPI(err error) *api.Error {
	var ae *api.Error
	errors.As(err, &ae)
	return ae
}

// TestByteBucket: body bytes are charged up front; a client in debt is
// refused until the debt is paid back, with the time that takes as the
// retry hint; bodies of unknown length are charged once read.
func TestByteBucket(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BodyBytesPerSecond, cfg.MaxBodyBytes = 1000, 1500
	l, err := newClientLimits(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	take := func(n int64) error {
		release, err := l.admit("c", n)
		if err == nil {
			release()
		}
		return err
	}
	// The bucket holds MaxBodyBytes; a client not in debt is admitted
	// whatever its body (it is never refused halfway through one), and
	// pays it back afterwards.
	refused := func(want time.Duration) {
		t.Helper()
		err := take(0)
		if !errors.Is(err, ErrRateLimited) || asAPI(err).RetryAfter != want {
			t.Fatalf("want a refusal for %v: %v", want, err)
		}
	}
	for _, n := range []int64{1500, 500} {
		if err := take(n); err != nil {
			t.Fatal(err)
		}
	}
	refused(500 * time.Millisecond)
	now = now.Add(100 * time.Millisecond)
	refused(400 * time.Millisecond)
	now = now.Add(400 * time.Millisecond)
	if err := take(800); err != nil {
		t.Fatalf("debt paid back: %v", err)
	}
	refused(800 * time.Millisecond)
	now = now.Add(800 * time.Millisecond)
	if err := take(0); err != nil {
		t.Fatal(err)
	}
	l.charge("c", 3000) // a chunked body, counted once read
	refused(3 * time.Second)
}
