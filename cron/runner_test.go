package cron_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/cron"
	"github.com/lunora/lunora/schema"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

const testApp = `tables:
  log:
    global: true
    columns: {id: int, tick: int}
    primary_key: [id]
functions:
  log:add:
    kind: mutation
    global: true
    args: {tick: int, note: text}
    sql: ["INSERT INTO log (id, tick) VALUES (:tick, :tick)"]
crons:
  beat:
    schedule: "%s"
    function: log:add
    args: {note: hi}
    tick_arg: tick
`

func app(t *testing.T, schedule string) *schema.App {
	t.Helper()
	a, err := schema.Parse("app.yaml", fmt.Appendf(nil, testApp, schedule))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fakeStore keeps the tick state as the global tier does, with the same
// compare-and-set rules.
type fakeStore struct {
	mu     sync.Mutex
	rows   map[string]*fakeRow
	failTo int // the first failTo reads fail
}

type fakeRow struct{ claimed, done, claims, failures int64 }

func newFakeStore() *fakeStore { return &fakeStore{rows: map[string]*fakeRow{}} }

func (s *fakeStore) CronTick(ctx context.Context, name string) (int64, int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failTo > 0 {
		s.failTo--
		return 0, 0, false, api.Errorf(codes.Unavailable, "no leader")
	}
	r := s.rows[name]
	if r == nil {
		return 0, 0, false, nil
	}
	return r.claimed, r.done, true, nil
}

func (s *fakeStore) StartCron(ctx context.Context, name string, from int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rows[name] == nil {
		s.rows[name] = &fakeRow{claimed: from, done: from}
	}
	return nil
}

func (s *fakeStore) ClaimCronTick(ctx context.Context, name string, tick int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rows[name]
	if r == nil {
		r = &fakeRow{}
		s.rows[name] = r
	}
	if tick <= r.done || tick < r.claimed {
		return false, nil
	}
	if tick == r.claimed {
		r.claims++
	} else {
		r.claimed, r.claims = tick, 1
	}
	return true, nil
}

func (s *fakeStore) FinishCronTick(ctx context.Context, name string, tick int64, failure string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rows[name]
	if r == nil || r.done >= tick {
		return nil
	}
	if failure == "" {
		r.done, r.failures = tick, 0
	} else {
		r.failures++
	}
	return nil
}

func (s *fakeStore) row(name string) fakeRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.rows[name]; r != nil {
		return *r
	}
	return fakeRow{}
}

// fakeCaller records the ticks it is called with; the first failN calls
// fail.
type fakeCaller struct {
	mu    sync.Mutex
	ticks []int64
	calls int
	failN int
}

func (c *fakeCaller) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if shardID != schema.GlobalGroup || function != "log:add" || args["note"] != "hi" {
		return nil, fmt.Errorf("unexpected call %s %s %v", shardID, function, args)
	}
	c.calls++
	if c.calls <= c.failN {
		return nil, api.Errorf(codes.Unavailable, "shard unavailable")
	}
	c.ticks = append(c.ticks, args["tick"].(int64))
	return &api.Result{}, nil
}

func (c *fakeCaller) snapshot() (ticks []int64, calls int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.ticks...), c.calls
}

type harness struct {
	t      *testing.T
	clock  *cron.FakeClock
	store  *fakeStore
	caller *fakeCaller
	reg    *prometheus.Registry
	runner *cron.Runner
}

func newHarness(t *testing.T, schedule string, now time.Time, store *fakeStore) *harness {
	t.Helper()
	h := &harness{t: t, clock: cron.NewFakeClock(now), store: store, caller: &fakeCaller{}, reg: prometheus.NewRegistry()}
	if h.store == nil {
		h.store = newFakeStore()
	}
	cfg := cron.DefaultConfig()
	cfg.App, cfg.Store, cfg.Caller, cfg.Clock, cfg.Registerer = app(t, schedule), h.store, h.caller, h.clock, h.reg
	r, err := cron.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.runner = r
	return h
}

// lead runs the runner's Lead until the test ends (or the returned stop).
func (h *harness) lead() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.runner.Lead(ctx)
	}()
	stop = func() { cancel(); <-done }
	h.t.Cleanup(stop)
	return stop
}

// waitIdle waits until the runner sleeps on the clock with calls calls
// made.
func (h *harness) waitIdle(calls int) {
	h.t.Helper()
	poll(h.t, func() error {
		_, got := h.caller.snapshot()
		if w := h.clock.Waiters(); got != calls || w != 1 {
			return fmt.Errorf("%d calls, want %d; %d clock waiters", got, calls, w)
		}
		return nil
	})
}

func poll(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) count(outcome string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lunora_cron_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["cron"] == "beat" && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

var t0 = time.Date(2024, 1, 1, 10, 0, 0, 0, time.UTC)

func ms(t time.Time) int64 { return t.UnixMilli() }

func wantTicks(t *testing.T, got []int64, want ...time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("ticks %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != ms(want[i]) {
			t.Fatalf("tick %d is %v, want %v", i, time.UnixMilli(got[i]).UTC(), want[i])
		}
	}
}

// TestOncePerTick: a new cron starts with the first tick after now, and
// each tick runs once, with its scheduled time as the tick argument.
func TestOncePerTick(t *testing.T) {
	h := newHarness(t, "@every 1s", t0.Add(500*time.Millisecond), nil)
	h.lead()
	h.waitIdle(0)
	for i := 1; i <= 5; i++ {
		h.clock.Advance(time.Second)
		h.waitIdle(i)
	}
	ticks, _ := h.caller.snapshot()
	wantTicks(t, ticks, t0.Add(1*time.Second), t0.Add(2*time.Second), t0.Add(3*time.Second), t0.Add(4*time.Second), t0.Add(5*time.Second))
	if r := h.store.row("beat"); r.done != ms(t0.Add(5*time.Second)) || r.claimed != r.done || r.claims != 1 {
		t.Fatalf("state %+v", r)
	}
	if n := h.count(cron.OutcomeOK); n != 5 {
		t.Fatalf("ok runs counted: %v", n)
	}
}

// TestMissedTicksRunOnce: after a downtime of 300 ticks only the latest
// missed tick runs, once; then the schedule goes on.
func TestMissedTicksRunOnce(t *testing.T) {
	store := newFakeStore()
	store.rows["beat"] = &fakeRow{claimed: ms(t0), done: ms(t0), claims: 1}
	h := newHarness(t, "@every 1s", t0.Add(5*time.Minute+400*time.Millisecond), store)
	h.lead()
	h.waitIdle(1)
	h.clock.Advance(time.Second)
	h.waitIdle(2)
	ticks, _ := h.caller.snapshot()
	wantTicks(t, ticks, t0.Add(5*time.Minute), t0.Add(5*time.Minute+time.Second))

	// The same with a calendar schedule: a day down runs the last minute's
	// tick.
	store = newFakeStore()
	store.rows["beat"] = &fakeRow{claimed: ms(t0), done: ms(t0)}
	h = newHarness(t, "*/5 * * * *", t0.Add(24*time.Hour+7*time.Minute), store)
	h.lead()
	h.waitIdle(1)
	ticks, _ = h.caller.snapshot()
	wantTicks(t, ticks, t0.Add(24*time.Hour+5*time.Minute))
}

// TestClaimedNotDoneRunsAgain: a tick a leader claimed but never finished
// runs again under a new runner, once — unless a newer tick is due, which
// runs instead.
func TestClaimedNotDoneRunsAgain(t *testing.T) {
	store := newFakeStore()
	store.rows["beat"] = &fakeRow{claimed: ms(t0.Add(3 * time.Second)), done: ms(t0.Add(2 * time.Second)), claims: 1}
	h := newHarness(t, "@every 1s", t0.Add(3*time.Second+400*time.Millisecond), store)
	h.lead()
	h.waitIdle(1)
	ticks, _ := h.caller.snapshot()
	wantTicks(t, ticks, t0.Add(3*time.Second))
	if r := h.store.row("beat"); r.claims != 2 || r.done != ms(t0.Add(3*time.Second)) {
		t.Fatalf("state %+v, want the tick claimed twice and done", r)
	}

	store = newFakeStore()
	store.rows["beat"] = &fakeRow{claimed: ms(t0.Add(3 * time.Second)), done: ms(t0.Add(2 * time.Second)), claims: 1}
	h = newHarness(t, "@every 1s", t0.Add(7*time.Second+200*time.Millisecond), store)
	h.lead()
	h.waitIdle(1)
	ticks, _ = h.caller.snapshot()
	wantTicks(t, ticks, t0.Add(7*time.Second))
}

// TestFailureRetried: a failed call is retried with a doubling back-off
// until it succeeds; each failure is counted and recorded.
func TestFailureRetried(t *testing.T) {
	h := newHarness(t, "@every 1m", t0.Add(30*time.Second), nil)
	h.caller.failN = 2
	h.lead()
	h.waitIdle(0)
	h.clock.Advance(30 * time.Second) // the tick at 10:01
	h.waitIdle(1)                     // failed, waiting 1s
	if r := h.store.row("beat"); r.failures != 1 || r.done >= r.claimed {
		t.Fatalf("after one failure: %+v", r)
	}
	h.clock.Advance(time.Second)
	h.waitIdle(2) // failed again, waiting 2s
	h.clock.Advance(time.Second)
	if _, calls := h.caller.snapshot(); calls != 2 {
		t.Fatalf("retried before its back-off: %d calls", calls)
	}
	h.clock.Advance(time.Second)
	h.waitIdle(3) // succeeded, waiting for 10:02
	ticks, _ := h.caller.snapshot()
	wantTicks(t, ticks, t0.Add(time.Minute))
	if r := h.store.row("beat"); r.done != ms(t0.Add(time.Minute)) || r.failures != 0 {
		t.Fatalf("after the success: %+v", r)
	}
	if e, ok := h.count(cron.OutcomeError), h.count(cron.OutcomeOK); e != 2 || ok != 1 {
		t.Fatalf("counted %v errors, %v ok", e, ok)
	}
}

// TestFailingTickSuperseded: a tick that keeps failing is retried until
// the next tick is due, then given up for it.
func TestFailingTickSuperseded(t *testing.T) {
	h := newHarness(t, "@every 10s", t0.Add(5*time.Second), nil)
	h.caller.failN = 1 << 30
	h.lead()
	h.waitIdle(0)
	h.clock.Advance(5 * time.Second) // tick 10s: fails, back-off 1s
	h.waitIdle(1)
	h.clock.Advance(time.Second) // fails, 2s
	h.waitIdle(2)
	h.clock.Advance(2 * time.Second) // fails, 4s
	h.waitIdle(3)
	h.clock.Advance(4 * time.Second) // at 17s: fails; 8s more passes 20s: given up
	h.waitIdle(4)
	if n := h.count(cron.OutcomeSuperseded); n != 1 {
		t.Fatalf("superseded counted %v", n)
	}
	h.clock.Advance(3 * time.Second) // at 20s: the next tick runs
	h.waitIdle(5)
	if r := h.store.row("beat"); r.claimed != ms(t0.Add(20*time.Second)) {
		t.Fatalf("state %+v, want tick 20s claimed", r)
	}
}

// TestStateReadRetried: a state read that fails (no leader yet) is
// retried on the clock.
func TestStateReadRetried(t *testing.T) {
	store := newFakeStore()
	store.failTo = 2
	h := newHarness(t, "@every 1s", t0.Add(100*time.Millisecond), store)
	h.lead()
	for i := 0; i < 2; i++ {
		poll(t, func() error {
			if h.clock.Waiters() != 1 {
				return errors.New("not waiting")
			}
			return nil
		})
		h.clock.Advance(time.Second * time.Duration(1<<i))
	}
	h.waitIdle(0)
	if r := h.store.row("beat"); r.done == 0 {
		t.Fatal("the cron was never started")
	}
}

type fakeLeadership struct {
	mu      sync.Mutex
	leader  bool
	changed chan struct{}
}

func (l *fakeLeadership) IsLeader() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leader
}

func (l *fakeLeadership) LeaderChanged() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *fakeLeadership) set(leader bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leader = leader
	close(l.changed)
	l.changed = make(chan struct{})
}

// TestRunFollowsLeadership: Run runs the crons only while the node leads,
// and stops them when it stops leading.
func TestRunFollowsLeadership(t *testing.T) {
	h := newHarness(t, "@every 1s", t0.Add(500*time.Millisecond), nil)
	l := &fakeLeadership{changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.runner.Run(ctx, l)
	}()
	defer func() { cancel(); <-done }()
	if h.runner.Leading() {
		t.Fatal("leading without leadership")
	}
	l.set(true)
	h.waitIdle(0)
	h.clock.Advance(time.Second)
	h.waitIdle(1)
	l.set(false)
	poll(t, func() error {
		if h.runner.Leading() {
			return errors.New("still leading")
		}
		return nil
	})
	h.clock.Advance(5 * time.Second)
	if _, calls := h.caller.snapshot(); calls != 1 {
		t.Fatalf("%d calls after losing the leadership", calls)
	}
	// Leading again, the missed ticks run once.
	l.set(true)
	poll(t, func() error {
		if _, calls := h.caller.snapshot(); calls != 2 {
			return fmt.Errorf("%d calls", calls)
		}
		return nil
	})
	ticks, _ := h.caller.snapshot()
	wantTicks(t, ticks, t0.Add(time.Second), t0.Add(6*time.Second))
}
