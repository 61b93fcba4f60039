package shardhost

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
)

// notifier runs a shard's live queries: one goroutine per active shard
// that has (or recently had) subscriptions. The writer hands it, after each
// commit and without ever waiting, the new commit sequence number and the
// tables the commit wrote; the notifier re-runs the live queries that read
// one of those tables, on a read connection, and queues their updates to
// the subscribers. Joins (new subscriptions) and leaves go through the same
// goroutine, so all of a live query's state is owned by one goroutine and
// every subscriber sees updates in commit order.
type notifier struct {
	a    *actor
	wake chan struct{} // capacity 1: a pending signal is never lost, never waited on
	done chan struct{} // closed when the goroutine has exited

	mu       sync.Mutex
	pending  []tableSeq // tables written by commits not yet processed
	spare    []tableSeq // the previous round's pending, reused
	latest   uint64     // newest commit seq handed over
	firstAt  time.Time  // when the oldest unprocessed commit was handed over
	joins    []*joinRequest
	leaves   []*Subscription
	stopping bool

	// Owned by the goroutine.
	queries map[string]*liveQuery // by function and canonical arguments
	known   uint64                // newest commit seq processed: every commit up to it has been seen
	expiry  *time.Timer
}

// tableSeq is a table some commit wrote and the first sequence number that
// may have written it since the notifier last looked.
type tableSeq struct {
	table string
	first uint64
}

// joinRequest asks the notifier to attach a new subscription.
type joinRequest struct {
	sub   *Subscription
	spec  querySpec
	since uint64
	done  chan error // buffered: the notifier never waits for Subscribe
}

// liveQueries returns the shard's notifier, starting it on first use.
func (a *actor) liveQueries() (*notifier, error) {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if a.liveStopped {
		return nil, api.Wrap(ErrClosed, "shard "+a.id+" is closing")
	}
	if n := a.live.Load(); n != nil {
		return n, nil
	}
	n := &notifier{
		a:       a,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		queries: map[string]*liveQuery{},
		expiry:  time.NewTimer(time.Hour),
	}
	n.expiry.Stop()
	a.live.Store(n)
	go n.run()
	return n, nil
}

// stopLive stops the notifier, if any, and waits for it: every subscriber
// gets a final UNAVAILABLE and every live query state is dropped.
func (a *actor) stopLive() {
	a.liveMu.Lock()
	a.liveStopped = true
	n := a.live.Load()
	a.liveMu.Unlock()
	if n != nil {
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		n.signal()
		<-n.done
	}
}

// publishCommit is called, in commit order, once a commit that advanced
// the sequence number to last is durable (first is the first number the
// commit used, tables the tables it wrote): by the writer goroutine in
// shard mode, by the node's syncer in node mode (syncer.go). It costs one atomic load when the shard has no live
// queries, and a short critical section otherwise; it never blocks on
// subscribers or on re-runs.
func (a *actor) publishCommit(first, last uint64, tables []string) {
	n := a.live.Load()
	if n == nil {
		return
	}
	n.committed(first, last, tables)
}

func (n *notifier) committed(first, last uint64, tables []string) {
	now := time.Now()
	n.mu.Lock()
	if n.stopping {
		n.mu.Unlock()
		return
	}
next:
	for _, t := range tables {
		for _, p := range n.pending {
			if p.table == t {
				continue next // the earlier first seq stands
			}
		}
		n.pending = append(n.pending, tableSeq{table: t, first: first})
	}
	n.latest = last
	if n.firstAt.IsZero() {
		n.firstAt = now
	}
	n.mu.Unlock()
	n.signal()
}

func (n *notifier) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// join hands a subscription to the notifier and waits until its first
// update is queued (or the attempt failed).
func (n *notifier) join(ctx context.Context, req *joinRequest) error {
	n.mu.Lock()
	if n.stopping {
		n.mu.Unlock()
		return api.Wrap(ErrClosed, "shard "+n.a.id+" is closing")
	}
	n.joins = append(n.joins, req)
	n.mu.Unlock()
	n.signal()
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return api.Errorf(api.CodeOf(ctx.Err()), "shard %s: %v while starting the subscription", n.a.id, ctx.Err())
	}
}

// leave asks the notifier to detach an ended subscription.
func (n *notifier) leave(s *Subscription) {
	n.mu.Lock()
	if !n.stopping {
		n.leaves = append(n.leaves, s)
	}
	n.mu.Unlock()
	n.signal()
}

func (n *notifier) run() {
	defer close(n.done)
	for {
		select {
		case <-n.wake:
		case <-n.expiry.C:
		}
		n.mu.Lock()
		pending, latest, firstAt := n.pending, n.latest, n.firstAt
		n.pending, n.spare = n.spare[:0], pending
		n.firstAt = time.Time{}
		joins, leaves, stopping := n.joins, n.leaves, n.stopping
		n.joins, n.leaves = nil, nil
		n.mu.Unlock()

		if stopping {
			n.shutdown(joins)
			return
		}
		for _, s := range leaves {
			if s.q != nil {
				s.q.detach(s, time.Now())
			}
		}
		n.invalidate(pending, latest)
		if n.rerunDirty() && !firstAt.IsZero() {
			n.a.h.m.notifyLatency.Observe(time.Since(firstAt).Seconds())
		}
		for _, j := range joins {
			j.done <- n.attach(j)
		}
		n.expire()
	}
}

// invalidate marks dirty every live query that reads a table the processed
// commits wrote.
func (n *notifier) invalidate(pending []tableSeq, latest uint64) {
	if latest > n.known {
		n.known = latest
	}
	if len(pending) == 0 {
		return
	}
	for i := range pending {
		pending[i].table = strings.ToLower(pending[i].table)
	}
	for _, q := range n.queries {
		var from uint64
		for _, p := range pending {
			if q.reads(p.table) && (from == 0 || p.first < from) {
				from = p.first
			}
		}
		if from != 0 {
			q.invalidate(from)
		}
	}
}

// rerunDirty re-runs, once each, the dirty live queries that have
// subscribers and queues their updates. Queries without subscribers (in
// their grace period) stay dirty and are re-run when someone resumes them.
// It reports whether anything was re-run.
func (n *notifier) rerunDirty() bool {
	ran := false
	for _, q := range n.queries {
		if q.dirty && len(q.subs) > 0 {
			n.rerun(q)
			ran = true
		}
	}
	return ran
}

// rerun evaluates a dirty query and sends its subscribers the change. A
// failing query (a result over the bounds, a statement timeout) ends its
// subscriptions with the error and is dropped.
func (n *notifier) rerun(q *liveQuery) bool {
	n.a.h.m.reruns.Inc()
	res, err := n.a.query(q.spec.callerContext(context.Background()), q.spec.fn.SQL, q.spec.args, nil)
	if err != nil {
		n.fail(q, err)
		return false
	}
	if res.Seq > n.known {
		n.known = res.Seq
	}
	if u, ok := q.advance(res, n.a.h.cfg.SubscriptionHistory, n.a.h.cfg.SubscriptionHistoryRows); ok {
		n.fanOut(q, u)
	}
	return true
}

// fanOut queues u to every subscriber of q. A subscriber whose buffer is
// full is cut off; nobody is waited for.
func (n *notifier) fanOut(q *liveQuery, u Update) {
	h := n.a.h
	sent := 0
	for i := 0; i < len(q.subs); {
		s := q.subs[i]
		switch s.deliver(u, h.cfg.SubscriptionBuffer) {
		case delivered:
			sent++
			i++
		case cutOff:
			h.m.cutOff.Inc()
			q.detach(s, time.Now()) // moves the last subscriber to i
		case ended:
			q.detach(s, time.Now())
		}
	}
	h.m.updatesSent.Add(float64(sent))
}

// attach serves a join: it finds or creates the live query (re-running it
// first if it is dirty), queues the subscription's first update — a
// snapshot, or the deltas since the subscriber's sequence number — and
// attaches it.
func (n *notifier) attach(j *joinRequest) error {
	if j.sub.isEnded() {
		return nil // Subscribe gave up (its context ended)
	}
	h := n.a.h
	q := n.queries[j.spec.key]
	if q == nil {
		var err error
		q, err = n.start(j.spec)
		if err != nil {
			return err
		}
	} else if q.dirty && !n.rerun(q) {
		return q.err
	}
	first := q.firstUpdate(j.since, n.known)
	q.attach(j.sub)
	switch j.sub.deliver(first, h.cfg.SubscriptionBuffer) {
	case delivered:
		h.m.updatesSent.Inc()
	default:
		q.detach(j.sub, time.Now())
	}
	return nil
}

// start creates a live query: the tables it reads (from the authorizer, at
// prepare time), then its first evaluation. Commits processed before this
// point are visible to that evaluation; later ones will be matched against
// the read set, so none is missed.
func (n *notifier) start(spec querySpec) (*liveQuery, error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.a.h.cfg.StatementTimeout)
	defer cancel()
	reads, err := n.a.tablesRead(ctx, spec.fn.SQL)
	if err != nil {
		return nil, err
	}
	res, err := n.a.query(spec.callerContext(ctx), spec.fn.SQL, spec.args, nil)
	if err != nil {
		return nil, err
	}
	if res.Seq > n.known {
		n.known = res.Seq
	}
	q := newLiveQuery(spec, reads, n.a.h.cfg.App, res)
	n.queries[spec.key] = q
	n.a.h.m.liveQueries.Inc()
	return q, nil
}

// fail ends every subscription of q with err and drops q.
func (n *notifier) fail(q *liveQuery, err error) {
	q.err = err
	for _, s := range q.subs {
		s.q = nil
		s.end(&Update{Kind: UpdateError, Seq: s.lastSeq, Err: err}, false)
	}
	q.subs = nil
	n.drop(q)
}

func (n *notifier) drop(q *liveQuery) {
	if n.queries[q.spec.key] == q {
		delete(n.queries, q.spec.key)
		n.a.h.m.liveQueries.Dec()
	}
}

// expire drops live queries whose grace period has passed and arms the
// timer for the next one.
func (n *notifier) expire() {
	now := time.Now()
	grace := n.a.h.cfg.SubscriptionGrace
	var next time.Duration
	for _, q := range n.queries {
		if len(q.subs) > 0 {
			continue
		}
		left := q.idleSince.Add(grace).Sub(now)
		if left <= 0 {
			n.drop(q)
			continue
		}
		if next == 0 || left < next {
			next = left
		}
	}
	if next > 0 {
		n.expiry.Reset(next)
	}
}

// shutdown ends every subscription with UNAVAILABLE, fails waiting joins
// and drops every live query.
func (n *notifier) shutdown(joins []*joinRequest) {
	n.expiry.Stop()
	closed := api.Wrap(ErrClosed, "shard "+n.a.id+" closed")
	for _, j := range joins {
		j.done <- closed
	}
	for _, q := range n.queries {
		for _, s := range q.subs {
			s.q = nil
			s.end(&Update{Kind: UpdateError, Seq: s.lastSeq, Err: closed}, false)
		}
		q.subs = nil
		n.drop(q)
	}
}
