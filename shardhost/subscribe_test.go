package shardhost_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// listArgs asks messages:list for every message of a room.
func listArgs(room string) map[string]any {
	return map[string]any{"room_id": room, "limit": int64(100000)}
}

func subscribe(t testing.TB, h *shardhost.Host, room, function string, args map[string]any, since uint64) *shardhost.Subscription {
	t.Helper()
	sub, err := h.Subscribe(context.Background(), "room_id="+room, function, args, since)
	if err != nil {
		t.Fatalf("subscribe %s: %v", function, err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// next waits for a subscription's next update.
func next(t testing.TB, sub *shardhost.Subscription) shardhost.Update {
	t.Helper()
	select {
	case u, ok := <-sub.Updates():
		if !ok {
			t.Fatal("subscription closed")
		}
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("no update within 20s")
	}
	return shardhost.Update{}
}

// mustSend sends a message and returns its commit sequence number.
func mustSend(t testing.TB, h *shardhost.Host, room, body string) uint64 {
	t.Helper()
	res, err := send(context.Background(), h, room, "ada", body)
	if err != nil {
		t.Fatal(err)
	}
	return res.Seq
}

// mirror is a client's copy of a keyed messages:list result, rebuilt from
// a subscription's snapshot and deltas.
type mirror struct {
	rows    map[int64][]any
	lastSeq uint64
	updates int
}

func (m *mirror) apply(u shardhost.Update) error {
	if u.Kind == shardhost.UpdateError {
		return fmt.Errorf("subscription ended: %v", u.Err)
	}
	if m.updates > 0 && u.Seq <= m.lastSeq {
		return fmt.Errorf("update %d at seq %d after seq %d: not strictly increasing", m.updates, u.Seq, m.lastSeq)
	}
	if !u.Keyed {
		return fmt.Errorf("messages:list update not keyed: %+v", u)
	}
	m.updates++
	m.lastSeq = u.Seq
	switch u.Kind {
	case shardhost.UpdateSnapshot:
		m.rows = make(map[int64][]any, len(u.Rows))
		for _, r := range u.Rows {
			m.rows[r[0].(int64)] = r
		}
	case shardhost.UpdateDelta:
		if m.rows == nil {
			return errors.New("delta before any snapshot")
		}
		for i, c := range u.Changes {
			id := c.Key[0].(int64)
			if i > 0 && id <= u.Changes[i-1].Key[0].(int64) {
				return fmt.Errorf("seq %d: changes not ordered by key", u.Seq)
			}
			_, had := m.rows[id]
			switch c.Op {
			case shardhost.ChangeInsert:
				if had {
					return fmt.Errorf("seq %d: insert of id %d already present", u.Seq, id)
				}
				m.rows[id] = c.Row
			case shardhost.ChangeUpdate:
				if !had {
					return fmt.Errorf("seq %d: update of missing id %d", u.Seq, id)
				}
				m.rows[id] = c.Row
			case shardhost.ChangeDelete:
				if !had {
					return fmt.Errorf("seq %d: delete of missing id %d", u.Seq, id)
				}
				delete(m.rows, id)
			}
		}
	}
	return nil
}

func (m *mirror) equal(rows [][]any) error {
	if len(m.rows) != len(rows) {
		return fmt.Errorf("mirror has %d rows, the query %d", len(m.rows), len(rows))
	}
	for _, r := range rows {
		got, ok := m.rows[r[0].(int64)]
		if !ok {
			return fmt.Errorf("mirror misses id %v", r[0])
		}
		if !sameRow(got, r) {
			return fmt.Errorf("id %v: mirror %v, query %v", r[0], got, r)
		}
	}
	return nil
}

// sameRow compares rows of messages:list (no blobs, so == applies).
func sameRow(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestLiveQueryManySubscribers: 1,000 subscribers of one query while 64
// writers insert; half subscribe before the writes, half during. Each
// subscriber's sequence numbers strictly increase and its snapshot plus
// deltas rebuild exactly the final result.
func TestLiveQueryManySubscribers(t *testing.T) {
	subs, msgs := 1000, 2000
	if testing.Short() {
		subs, msgs = 100, 200
	}
	const writers = 64
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) {
		c.Registerer = reg
		c.SubscriptionBuffer = 4096 // this test checks correctness, not back-pressure
	})
	const room = "busy"
	var finalRows [][]any
	var finalSeq uint64
	finalReady := make(chan struct{})

	var wg sync.WaitGroup
	errs := make(chan error, subs)
	start := func(i int) {
		sub, err := h.Subscribe(context.Background(), "room_id="+room, "messages:list", listArgs(room), 0)
		if err != nil {
			errs <- fmt.Errorf("subscriber %d: %v", i, err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			m := &mirror{}
			finalKnown := false
			reached := func() bool {
				switch {
				case m.lastSeq > finalSeq:
					errs <- fmt.Errorf("subscriber %d: seq %d past the final %d", i, m.lastSeq, finalSeq)
					return true
				case m.lastSeq == finalSeq:
					if err := m.equal(finalRows); err != nil {
						errs <- fmt.Errorf("subscriber %d: %v", i, err)
					}
					return true
				}
				return false
			}
			for {
				var u shardhost.Update
				var ok bool
				if finalKnown {
					u, ok = <-sub.Updates()
				} else {
					select {
					case u, ok = <-sub.Updates():
					case <-finalReady:
						finalKnown = true
						if reached() {
							return
						}
						continue
					}
				}
				if !ok {
					errs <- fmt.Errorf("subscriber %d: closed", i)
					return
				}
				if err := m.apply(u); err != nil {
					errs <- fmt.Errorf("subscriber %d: %v", i, err)
					return
				}
				if finalKnown && reached() {
					return
				}
			}
		}()
	}
	t0 := time.Now()
	for i := 0; i < subs/2; i++ {
		start(i)
	}
	var sent atomic.Int64
	var wwg sync.WaitGroup
	werrs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wwg.Add(1)
		go func(w int) {
			defer wwg.Done()
			for j := w; j < msgs; j += writers {
				if _, err := send(context.Background(), h, room, fmt.Sprintf("w%d", w), fmt.Sprintf("m%d", j)); err != nil {
					werrs <- err
					return
				}
				sent.Add(1)
			}
		}(w)
	}
	waitFor(t, 60*time.Second, func() error {
		if n := sent.Load(); n < int64(msgs/10) {
			return fmt.Errorf("%d messages sent", n)
		}
		return nil
	})
	for i := subs / 2; i < subs; i++ {
		start(i)
	}
	wwg.Wait()
	written := time.Since(t0)
	close(werrs)
	for err := range werrs {
		t.Fatal(err)
	}
	res, err := h.Call(context.Background(), "room_id="+room, "messages:list", listArgs(room))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != msgs {
		t.Fatalf("%d messages, want %d", len(res.Rows), msgs)
	}
	bodies := map[string]bool{}
	for _, r := range res.Rows {
		bodies[r[2].(string)] = true
	}
	for j := 0; j < msgs; j++ {
		if !bodies[fmt.Sprintf("m%d", j)] {
			t.Fatalf("message m%d missing", j)
		}
	}
	finalRows, finalSeq = res.Rows, res.Seq
	close(finalReady)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("subscribers did not reach the final seq within 120s")
	}
	converged := time.Since(t0)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d subscribers, %d messages by %d writers: written in %v, every subscriber at the final seq %d after %v; %v re-runs, %v updates sent",
		subs, msgs, writers, written.Round(time.Millisecond), finalSeq, converged.Round(time.Millisecond),
		metricValue(t, reg, "lunora_live_query_reruns_total"), metricValue(t, reg, "lunora_subscription_updates_total"))
	if n := metricValue(t, reg, "lunora_live_queries"); n != 1 {
		t.Errorf("%v live query states, want 1 shared by every subscriber", n)
	}
}

// TestLiveQueryResume: a subscriber that reconnects with its last seq gets
// exactly the changes since, with no snapshot; one whose seq is older than
// the history (or unknown to the shard) gets a snapshot marked Reset.
func TestLiveQueryResume(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) { c.IdleTimeout = time.Minute })
	const room = "r"
	sub := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	m := &mirror{}
	if err := m.apply(next(t, sub)); err != nil {
		t.Fatal(err)
	}
	var s uint64
	for i := 0; i < 3; i++ {
		s = mustSend(t, h, room, fmt.Sprint("before ", i))
	}
	for m.lastSeq < s {
		if err := m.apply(next(t, sub)); err != nil {
			t.Fatal(err)
		}
	}
	sub.Close()
	if _, ok := <-sub.Updates(); ok {
		t.Fatal("updates after Close")
	}

	const k = 5
	var last uint64
	for i := 0; i < k; i++ {
		last = mustSend(t, h, room, fmt.Sprint("after ", i))
	}
	re := subscribe(t, h, room, "messages:list", listArgs(room), s)
	u := next(t, re)
	if u.Kind != shardhost.UpdateDelta || u.Reset || !u.Keyed || u.Seq != last || len(u.Changes) != k {
		t.Fatalf("resume from %d: %+v, want a delta of %d inserts at seq %d", s, u, k, last)
	}
	for i, c := range u.Changes {
		if c.Op != shardhost.ChangeInsert || c.Row[2] != fmt.Sprint("after ", i) {
			t.Fatalf("change %d = %+v, want the insert of %q", i, c, fmt.Sprint("after ", i))
		}
	}
	if err := m.apply(u); err != nil {
		t.Fatal(err)
	}
	// Live again after the resume.
	last = mustSend(t, h, room, "live")
	if err := m.apply(next(t, re)); err != nil || m.lastSeq != last {
		t.Fatalf("after resume: %v, seq %d, want %d", err, m.lastSeq, last)
	}
	res, err := h.Call(context.Background(), "room_id="+room, "messages:list", listArgs(room))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.equal(res.Rows); err != nil {
		t.Fatal(err)
	}

	// Resuming at the current seq: an empty delta, then live.
	cur := subscribe(t, h, room, "messages:list", listArgs(room), last)
	if u := next(t, cur); u.Kind != shardhost.UpdateDelta || u.Reset || u.Seq != last || len(u.Changes) != 0 {
		t.Fatalf("resume at the current seq: %+v, want an empty delta at %d", u, last)
	}
	// From a seq the shard has not reached: a reset snapshot.
	future := subscribe(t, h, room, "messages:list", listArgs(room), last+1000)
	if u := next(t, future); u.Kind != shardhost.UpdateSnapshot || !u.Reset || len(u.Rows) != len(res.Rows) || u.Seq != last {
		t.Fatalf("resume from the future: %+v, want a reset snapshot at %d", u, last)
	}
}

// TestLiveQueryResumeBeyondHistory: with a history of two entries, a seq
// five evaluations old can no longer be resumed: a snapshot with Reset.
func TestLiveQueryResumeBeyondHistory(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) {
		c.IdleTimeout = time.Minute
		c.SubscriptionHistory = 2
	})
	const room = "r"
	live := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	m := &mirror{}
	if err := m.apply(next(t, live)); err != nil {
		t.Fatal(err)
	}
	s := mustSend(t, h, room, "first")
	for m.lastSeq < s {
		if err := m.apply(next(t, live)); err != nil {
			t.Fatal(err)
		}
	}
	var last uint64
	for i := 0; i < 5; i++ {
		last = mustSend(t, h, room, fmt.Sprint("m", i))
		for m.lastSeq < last { // one evaluation per commit
			if err := m.apply(next(t, live)); err != nil {
				t.Fatal(err)
			}
		}
	}
	re := subscribe(t, h, room, "messages:list", listArgs(room), s)
	u := next(t, re)
	if u.Kind != shardhost.UpdateSnapshot || !u.Reset || u.Seq != last || len(u.Rows) != 6 {
		t.Fatalf("resume from %d past the history: %+v, want a reset snapshot of 6 rows at %d", s, u, last)
	}
	// The second-newest evaluation is still in the history.
	if u := next(t, subscribe(t, h, room, "messages:list", listArgs(room), last-1)); u.Kind != shardhost.UpdateDelta || u.Reset || len(u.Changes) != 1 || u.Seq != last {
		t.Fatalf("resume from %d: %+v, want a delta of one insert", last-1, u)
	}
}

// TestLiveQueryResumeAfterHibernation: hibernating drops the shard's live
// query states, so a later resume is a reset snapshot, never a gap.
func TestLiveQueryResumeAfterHibernation(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) { c.IdleTimeout = 50 * time.Millisecond; c.Registerer = reg })
	const room = "r"
	sub := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	next(t, sub)
	s := mustSend(t, h, room, "x")
	if u := next(t, sub); u.Seq != s {
		t.Fatalf("delta at %d, want %d", u.Seq, s)
	}
	sub.Close()
	waitFor(t, 10*time.Second, func() error {
		if n := metricValue(t, reg, "lunora_live_queries"); n != 0 {
			return fmt.Errorf("%v live queries", n)
		}
		if st, _ := h.Status(context.Background()); st.ActiveShards != 0 {
			return fmt.Errorf("%d shards active", st.ActiveShards)
		}
		return nil
	})
	// A write while no live query state exists: the history that would
	// cover it is gone.
	s2 := mustSend(t, h, room, "y")
	if u := next(t, subscribe(t, h, room, "messages:list", listArgs(room), s)); u.Kind != shardhost.UpdateSnapshot || !u.Reset || u.Seq != s2 || len(u.Rows) != 2 {
		t.Fatalf("resume after hibernation: %+v, want a reset snapshot at %d", u, s2)
	}
	// The new state's first evaluation is exact: resuming at its seq is an
	// empty delta.
	if u := next(t, subscribe(t, h, room, "messages:list", listArgs(room), s2)); u.Kind != shardhost.UpdateDelta || u.Reset || u.Seq != s2 || len(u.Changes) != 0 {
		t.Fatalf("resume at the current seq: %+v", u)
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

// TestStalledSubscriberDoesNotSlowWriter: a subscriber that never reads
// fills its buffer and is cut off with RESOURCE_EXHAUSTED; meanwhile the
// writer's latency stays within 2x + 5ms (p99) of the same writes with no
// subscriber, measured in the same test.
func TestStalledSubscriberDoesNotSlowWriter(t *testing.T) {
	const buffer, n = 128, 200
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) { c.SubscriptionBuffer = buffer; c.Registerer = reg })
	const room = "r"
	measure := func(label string) []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			start := time.Now()
			mustSend(t, h, room, fmt.Sprint(label, i))
			ds[i] = time.Since(start)
		}
		return ds
	}
	measure("warm")
	// The stalled subscriber gets one update per commit (a keyed list of
	// the last 50 messages changes with each insert): it fills its buffer
	// after `buffer` commits and is cut off during the second phase.
	var base, stalled []time.Duration
	var sub *shardhost.Subscription
	for round := 0; round < 2; round++ {
		base = append(base, measure("base")...)
		if round == 0 {
			sub = subscribe(t, h, room, "messages:list", map[string]any{"room_id": room, "limit": int64(50)}, 0)
		}
		stalled = append(stalled, measure("stalled")...)
	}
	b50, b99 := percentile(base, 0.5), percentile(base, 0.99)
	s50, s99 := percentile(stalled, 0.5), percentile(stalled, 0.99)
	t.Logf("mutation latency without subscriber p50 %v p99 %v; with a stalled one p50 %v p99 %v", b50, b99, s50, s99)
	if s99 > 2*b99+5*time.Millisecond {
		t.Errorf("p99 with a stalled subscriber %v > 2 x %v + 5ms", s99, b99)
	}
	got := 0
	var last shardhost.Update
	for u := range sub.Updates() {
		got++
		last = u
	}
	if last.Kind != shardhost.UpdateError || api.CodeOf(last.Err) != codes.ResourceExhausted || !errors.Is(last.Err, shardhost.ErrSubscriberTooSlow) {
		t.Fatalf("last update %+v, want RESOURCE_EXHAUSTED subscriber too slow", last)
	}
	if got != buffer+1 {
		t.Fatalf("%d updates before the channel closed, want %d then the error", got, buffer)
	}
	t.Logf("cut off with: %v", last.Err)
	if v := metricValue(t, reg, "lunora_subscriptions_cut_off_total"); v != 1 {
		t.Fatalf("cut off counter %v, want 1", v)
	}
	if v := metricValue(t, reg, "lunora_subscriptions_active"); v != 0 {
		t.Fatalf("%v subscriptions active after the cut-off", v)
	}
}

// TestLiveQueryPreciseInvalidation: a commit that writes only tables the
// query does not read does not re-run it.
func TestLiveQueryPreciseInvalidation(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) { c.Registerer = reg })
	const room = "r"
	ctx := context.Background()
	list := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	cnt := subscribe(t, h, room, "messages:count", map[string]any{"room_id": room}, 0)
	next(t, list)
	next(t, cnt)
	before := metricValue(t, reg, "lunora_live_query_reruns_total")
	res, err := h.Call(ctx, "room_id="+room, "rooms:create", map[string]any{"room_id": room, "title": "hello"})
	if err != nil || res.Seq == 0 {
		t.Fatalf("rooms:create: %v %+v", err, res)
	}
	s := mustSend(t, h, room, "x")
	if u := next(t, list); u.Seq != s || len(u.Changes) != 1 {
		t.Fatalf("list: %+v, want one insert at %d (nothing for the rooms commit at %d)", u, s, res.Seq)
	}
	if u := next(t, cnt); u.Seq != s || u.Rows[0][0] != int64(1) {
		t.Fatalf("count: %+v, want 1 at %d", u, s)
	}
	if d := metricValue(t, reg, "lunora_live_query_reruns_total") - before; d != 2 {
		t.Fatalf("%v re-runs for a rooms commit and a messages commit, want 2 (each query once, for the messages commit)", d)
	}
}

// TestLiveQueryDeleteAll: DELETE without WHERE reaches subscribers
// (SQLite's truncate optimization would skip the update hook; the sandbox
// turns it off).
func TestLiveQueryDeleteAll(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	if _, err := h.Call(ctx, "", "settings:set", map[string]any{"key": "k", "value": "v"}); err != nil {
		t.Fatal(err)
	}
	sub, err := h.Subscribe(ctx, "", "settings:get", map[string]any{"key": "k"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if u := next(t, sub); u.Kind != shardhost.UpdateSnapshot || !u.Keyed || len(u.Rows) != 1 {
		t.Fatalf("snapshot %+v", u)
	}
	res, err := h.Exec(ctx, "", "DELETE FROM settings", nil)
	if err != nil {
		t.Fatal(err)
	}
	u := next(t, sub)
	if u.Kind != shardhost.UpdateDelta || u.Seq != res.Seq || len(u.Changes) != 1 || u.Changes[0].Op != shardhost.ChangeDelete || u.Changes[0].Key[0] != "k" {
		t.Fatalf("after DELETE FROM settings: %+v", u)
	}
}

// TestSubscribeBadInput: the canonical codes for what cannot be
// subscribed to.
func TestSubscribeBadInput(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	cases := []struct {
		name, shard, fn string
		args            map[string]any
		code            codes.Code
	}{
		{"unknown function", "room_id=r", "messages:nope", nil, codes.NotFound},
		{"mutation", "room_id=r", "messages:send", map[string]any{"room_id": "r", "author": "a", "body": "b"}, codes.InvalidArgument},
		{"bad args", "room_id=r", "messages:list", map[string]any{"room_id": "r", "limit": "ten"}, codes.InvalidArgument},
		{"unknown arg", "room_id=r", "messages:list", map[string]any{"room_id": "r", "lmit": int64(1)}, codes.InvalidArgument},
		{"key mismatch", "room_id=r", "messages:list", map[string]any{"room_id": "other"}, codes.InvalidArgument},
		{"wrong group", "room_id=r", "settings:get", map[string]any{"key": "k"}, codes.InvalidArgument},
		{"bad shard id", "nope=r", "messages:list", map[string]any{"room_id": "r"}, codes.InvalidArgument},
		{"global function", "__global__", "users:get", map[string]any{"user_id": "u"}, codes.Unimplemented},
		{"global shard", "__global__", "messages:list", map[string]any{"room_id": "r"}, codes.Unimplemented},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := h.Subscribe(ctx, tc.shard, tc.fn, tc.args, 0)
			if got := api.CodeOf(err); got != tc.code {
				if sub != nil {
					sub.Close()
				}
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			t.Logf("%v", err)
		})
	}
	if _, err := h.Subscribe(ctx, "room_id=r", "messages:send", nil, 0); !errors.Is(err, shardhost.ErrNotQuery) {
		t.Fatalf("mutation: %v, want ErrNotQuery", err)
	}
}

// TestSubscribeLimit: MaxSubscriptions per node, with a retry hint; a
// closed subscription frees its slot.
func TestSubscribeLimit(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) { c.MaxSubscriptions = 3 })
	ctx := context.Background()
	var subs []*shardhost.Subscription
	for i := 0; i < 3; i++ {
		subs = append(subs, subscribe(t, h, fmt.Sprint("r", i), "messages:count", map[string]any{"room_id": fmt.Sprint("r", i)}, 0))
	}
	_, err := h.Subscribe(ctx, "room_id=r9", "messages:count", map[string]any{"room_id": "r9"}, 0)
	if api.CodeOf(err) != codes.ResourceExhausted || api.RetryAfterOf(err) <= 0 || !errors.Is(err, shardhost.ErrTooManySubscriptions) {
		t.Fatalf("4th subscription: %v, want RESOURCE_EXHAUSTED with a retry hint", err)
	}
	subs[0].Close()
	subscribe(t, h, "r9", "messages:count", map[string]any{"room_id": "r9"}, 0)
}

// TestLiveQueryUnkeyed: an aggregate has no key: every update is a full
// snapshot with Keyed=false.
func TestLiveQueryUnkeyed(t *testing.T) {
	h := newHost(t, nil)
	const room = "r"
	sub := subscribe(t, h, room, "messages:count", map[string]any{"room_id": room}, 0)
	if u := next(t, sub); u.Kind != shardhost.UpdateSnapshot || u.Keyed || u.Reset || len(u.Rows) != 1 || u.Rows[0][0] != int64(0) {
		t.Fatalf("first update %+v", u)
	}
	for i := 1; i <= 3; i++ {
		s := mustSend(t, h, room, "x")
		u := next(t, sub)
		if u.Kind != shardhost.UpdateSnapshot || u.Keyed || u.Changes != nil || u.Seq != s || u.Rows[0][0] != int64(i) || u.Columns[0] != "n" {
			t.Fatalf("update %d: %+v", i, u)
		}
	}
	// Resuming an unkeyed query is a snapshot too, not a reset when the
	// seq is known.
	cur := subscribe(t, h, room, "messages:count", map[string]any{"room_id": room}, 3)
	if u := next(t, cur); u.Kind != shardhost.UpdateSnapshot || u.Reset || u.Keyed || u.Rows[0][0] != int64(3) {
		t.Fatalf("resume unkeyed: %+v", u)
	}
}

// TestSubscriptionLifetime: a subscription keeps its shard active, ends
// with UNAVAILABLE on shutdown, and its context ending closes it.
func TestSubscriptionLifetime(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) { c.IdleTimeout = 30 * time.Millisecond; c.Registerer = reg })
	ctx, cancel := context.WithCancel(context.Background())
	a, err := h.Subscribe(ctx, "room_id=a", "messages:count", map[string]any{"room_id": "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := subscribe(t, h, "b", "messages:count", map[string]any{"room_id": "b"}, 0)
	next(t, a)
	next(t, b)
	// Both shards stay active well past the idle timeout.
	hib := metricValue(t, reg, "lunora_shard_hibernations_total")
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if st, _ := h.Status(ctx); st.ActiveShards != 2 || metricValue(t, reg, "lunora_shard_hibernations_total") != hib {
			t.Fatalf("a shard with a subscription hibernated: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if _, ok := <-a.Updates(); ok {
		t.Fatal("update after the context ended")
	}
	waitFor(t, 10*time.Second, func() error {
		if st, _ := h.Status(context.Background()); st.ActiveShards != 1 {
			return fmt.Errorf("%d shards active, want 1 (only b's)", st.ActiveShards)
		}
		return nil
	})
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := h.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	u, ok := <-b.Updates()
	if !ok || u.Kind != shardhost.UpdateError || api.CodeOf(u.Err) != codes.Unavailable {
		t.Fatalf("after shutdown: %+v %v, want UNAVAILABLE", u, ok)
	}
	if _, ok := <-b.Updates(); ok {
		t.Fatal("channel open after the final error")
	}
	if _, err := h.Subscribe(context.Background(), "room_id=c", "messages:count", map[string]any{"room_id": "c"}, 0); api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("subscribe after shutdown: %v", err)
	}
	if v := metricValue(t, reg, "lunora_subscriptions_active"); v != 0 {
		t.Fatalf("%v subscriptions after shutdown", v)
	}
}

// TestLiveQueryUpdatesAndDeletes: updated and deleted rows reach live
// subscribers as keyed changes, and a resume composes what happened while
// away: a row inserted then deleted is absent, one updated twice is one
// update, one deleted then re-inserted is an update.
func TestLiveQueryUpdatesAndDeletes(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) { c.IdleTimeout = time.Minute })
	const room = "r"
	ctx := context.Background()
	execRaw := func(sql string) uint64 {
		t.Helper()
		res, err := h.Exec(ctx, "room_id="+room, sql, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Seq
	}
	exec := execRaw
	for i := 1; i <= 4; i++ {
		mustSend(t, h, room, fmt.Sprint("m", i))
	}
	sub := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	m := &mirror{}
	if err := m.apply(next(t, sub)); err != nil {
		t.Fatal(err)
	}
	check := func(seq uint64, want map[shardhost.ChangeOp]int) {
		t.Helper()
		u := next(t, sub)
		if err := m.apply(u); err != nil {
			t.Fatal(err)
		}
		got := map[shardhost.ChangeOp]int{}
		for _, c := range u.Changes {
			got[c.Op]++
		}
		if u.Seq != seq || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("delta %+v, want %v at seq %d", u, want, seq)
		}
	}
	check(exec("UPDATE messages SET body = 'edited' WHERE id = 2"), map[shardhost.ChangeOp]int{shardhost.ChangeUpdate: 1})
	check(exec("DELETE FROM messages WHERE id = 3"), map[shardhost.ChangeOp]int{shardhost.ChangeDelete: 1})
	s := exec("UPDATE messages SET author = 'bob' WHERE id = 2")
	check(s, map[shardhost.ChangeOp]int{shardhost.ChangeUpdate: 1})
	sub.Close()

	// Another subscriber stays and reads every update, so each commit
	// while the first is away is its own evaluation and history entry:
	// the resume composes them.
	keep := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	km := &mirror{}
	exec = func(sql string) uint64 {
		t.Helper()
		seq := execRaw(sql)
		for km.lastSeq < seq {
			if err := km.apply(next(t, keep)); err != nil {
				t.Fatal(err)
			}
		}
		return seq
	}
	mustSend(t, h, room, "new") // id 5: insert
	exec("INSERT INTO messages(room_id, id, author, body, created_at) VALUES ('r', 9, 'x', 'gone', 0)")
	exec("DELETE FROM messages WHERE id = 9")              // inserted then deleted: nothing
	exec("UPDATE messages SET body = 'once' WHERE id = 1") // updated twice: one update
	exec("UPDATE messages SET body = 'twice' WHERE id = 1")
	exec("DELETE FROM messages WHERE id = 4") // deleted then re-inserted: an update
	last := exec("INSERT INTO messages(room_id, id, author, body, created_at) VALUES ('r', 4, 'y', 'back', 0)")
	exec("DELETE FROM messages WHERE id = 2 AND 0") // a commit that changes nothing
	re := subscribe(t, h, room, "messages:list", listArgs(room), s)
	u := next(t, re)
	if u.Kind != shardhost.UpdateDelta || u.Reset || u.Seq != last {
		t.Fatalf("resume: %+v, want a delta at %d", u, last)
	}
	var got []string
	for _, c := range u.Changes {
		got = append(got, fmt.Sprintf("%d:%v", c.Op, c.Key[0]))
	}
	if want := fmt.Sprintf("[%d:1 %d:4 %d:5]", shardhost.ChangeUpdate, shardhost.ChangeUpdate, shardhost.ChangeInsert); fmt.Sprint(got) != want {
		t.Fatalf("composed changes %v, want %s", got, want)
	}
	if err := m.apply(u); err != nil {
		t.Fatal(err)
	}
	res, err := h.Call(ctx, "room_id="+room, "messages:list", listArgs(room))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.equal(res.Rows); err != nil {
		t.Fatal(err)
	}
}

// TestLiveQueryErrors: a query that fails on its first run fails
// Subscribe; one that starts failing on a re-run ends its subscriptions
// with that error.
func TestLiveQueryErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) { c.MaxResultRows = 3; c.Registerer = reg })
	const room = "r"
	for i := 0; i < 3; i++ {
		mustSend(t, h, room, "x")
	}
	sub := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	next(t, sub)
	mustSend(t, h, room, "one too many")
	u, ok := <-sub.Updates()
	if !ok || u.Kind != shardhost.UpdateError || api.CodeOf(u.Err) != codes.OutOfRange {
		t.Fatalf("re-run over MaxResultRows: %+v, want OUT_OF_RANGE", u)
	}
	if _, ok := <-sub.Updates(); ok {
		t.Fatal("channel open after the error")
	}
	if _, err := h.Subscribe(context.Background(), "room_id="+room, "messages:list", listArgs(room), 0); api.CodeOf(err) != codes.OutOfRange {
		t.Fatalf("subscribe: %v, want OUT_OF_RANGE", err)
	}
	waitFor(t, 10*time.Second, func() error {
		if v := metricValue(t, reg, "lunora_subscriptions_active") + metricValue(t, reg, "lunora_live_queries"); v != 0 {
			return fmt.Errorf("%v subscriptions and live queries left", v)
		}
		return nil
	})
}

// TestLiveQuerySharingAndGrace: equal bound arguments share one live
// query (whatever their input types); a live query outlives its last
// subscriber by SubscriptionGrace, then is dropped.
func TestLiveQuerySharingAndGrace(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHost(t, func(c *shardhost.Config) {
		c.Registerer = reg
		c.IdleTimeout = time.Minute
		c.SubscriptionGrace = 100 * time.Millisecond
	})
	const room = "r"
	a := subscribe(t, h, room, "messages:list", map[string]any{"room_id": room, "limit": int64(10)}, 0)
	b := subscribe(t, h, room, "messages:list", map[string]any{"room_id": room, "limit": float64(10)}, 0)
	c := subscribe(t, h, room, "messages:list", map[string]any{"room_id": room}, 0)
	if v := metricValue(t, reg, "lunora_live_queries"); v != 2 {
		t.Fatalf("%v live queries, want 2 (limit 10 twice, limit 50)", v)
	}
	for _, s := range []*shardhost.Subscription{a, b, c} {
		next(t, s)
	}
	before := metricValue(t, reg, "lunora_live_query_reruns_total")
	seq := mustSend(t, h, room, "x")
	for _, s := range []*shardhost.Subscription{a, b, c} {
		if u := next(t, s); u.Seq != seq {
			t.Fatalf("update at %d, want %d", u.Seq, seq)
		}
	}
	if d := metricValue(t, reg, "lunora_live_query_reruns_total") - before; d != 2 {
		t.Fatalf("%v re-runs for 3 subscribers of 2 queries, want 2", d)
	}
	for _, s := range []*shardhost.Subscription{a, b, c} {
		s.Close()
	}
	waitFor(t, 10*time.Second, func() error {
		if v := metricValue(t, reg, "lunora_live_queries"); v != 0 {
			return fmt.Errorf("%v live queries after the grace period", v)
		}
		return nil
	})
	if st, _ := h.Status(context.Background()); st.ActiveShards != 1 {
		t.Fatalf("%d shards active; the shard hibernates after IdleTimeout, not with its live queries", st.ActiveShards)
	}
}

// TestLiveQueryResumeMidBatch: sequence numbers inside a group commit were
// never visible to a reader, so a resume from one is a reset snapshot; the
// batch's last seq resumes with an empty delta.
func TestLiveQueryResumeMidBatch(t *testing.T) {
	var hold atomic.Bool
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	h := newHost(t, func(c *shardhost.Config) {
		c.IdleTimeout = time.Minute
		c.BeforeBatch = func(string) {
			if hold.Load() {
				entered <- struct{}{}
				<-gate
			}
		}
	})
	const room = "r"
	live := subscribe(t, h, room, "messages:list", listArgs(room), 0)
	m := &mirror{}
	if err := m.apply(next(t, live)); err != nil {
		t.Fatal(err)
	}
	mustSend(t, h, room, "first")
	seqs := make(chan uint64, 4)
	sendAsync := func() {
		go func() {
			res, err := send(context.Background(), h, room, "a", "batched")
			if err != nil {
				t.Error(err)
				seqs <- 0
				return
			}
			seqs <- res.Seq
		}()
	}
	// Hold the writer on a first mutation; three more wait in the mailbox
	// and then commit together.
	hold.Store(true)
	sendAsync()
	<-entered
	hold.Store(false)
	for i := 0; i < 3; i++ {
		sendAsync()
	}
	waitFor(t, 10*time.Second, func() error {
		if n := shardhost.QueuedLen(h); n != 3 {
			return fmt.Errorf("%d queued", n)
		}
		return nil
	})
	close(gate)
	var last uint64
	for i := 0; i < 4; i++ {
		last = max(last, <-seqs)
	}
	for m.lastSeq < last {
		if err := m.apply(next(t, live)); err != nil {
			t.Fatal(err)
		}
	}
	for _, since := range []uint64{last - 2, last - 1} {
		if u := next(t, subscribe(t, h, room, "messages:list", listArgs(room), since)); u.Kind != shardhost.UpdateSnapshot || !u.Reset || u.Seq != last {
			t.Fatalf("resume from %d inside the batch ending at %d: %+v, want a reset snapshot", since, last, u)
		}
	}
	if u := next(t, subscribe(t, h, room, "messages:list", listArgs(room), last)); u.Kind != shardhost.UpdateDelta || u.Reset || len(u.Changes) != 0 {
		t.Fatalf("resume from %d: %+v, want an empty delta", last, u)
	}
}
