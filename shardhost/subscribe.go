package shardhost

import (
	"context"
	"database/sql/driver"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// Sentinel errors of live queries, matched with errors.Is. (They belong
// with the others in errors.go; they are here while subscriptions are new.)
var (
	// ErrNotQuery: only query functions can be subscribed to.
	ErrNotQuery = api.New(codes.InvalidArgument, "subscribe to a query function")
	// ErrGlobalLiveQuery: live queries on the global tier do not exist yet.
	ErrGlobalLiveQuery = api.New(codes.Unimplemented, "live queries on global tables are not supported yet")
	// ErrTooManySubscriptions: the node holds MaxSubscriptions already.
	ErrTooManySubscriptions = &api.Error{Code: codes.ResourceExhausted, Msg: "node is at its limit of live subscriptions", RetryAfter: subscriptionRetryAfter}
	// ErrSubscriberTooSlow: a subscriber fell SubscriptionBuffer updates
	// behind and was cut off; it may resubscribe with its last sequence
	// number.
	ErrSubscriberTooSlow = api.New(codes.ResourceExhausted, "subscriber too slow")
)

// UpdateKind says what an Update carries.
type UpdateKind int

const (
	// UpdateSnapshot carries the full result in Rows.
	UpdateSnapshot UpdateKind = iota + 1
	// UpdateDelta carries keyed Changes since the subscriber's previous
	// update (or since the sequence number it resumed from).
	UpdateDelta
	// UpdateError is the last update of a subscription that the shard
	// ended; Err says why.
	UpdateError
)

// ChangeOp and RowChange are the request path's: a keyed change of a live
// query's result. Row is the whole new row (nil for deletes); Key holds the
// key columns' values in primary key order.
type (
	ChangeOp  = api.ChangeOp
	RowChange = api.RowChange
)

const (
	ChangeInsert = api.ChangeInsert
	ChangeUpdate = api.ChangeUpdate
	ChangeDelete = api.ChangeDelete
)

// Update is one event of a subscription. Its slices are shared with the
// other subscribers of the same query: read them, never modify them.
type Update struct {
	Kind UpdateKind
	// Seq is the shard commit sequence number the state reflects. It
	// strictly increases along a subscription.
	Seq uint64
	// Columns names the result's columns (snapshots and deltas).
	Columns []string
	// Rows is the full result of a snapshot, in the query's order.
	Rows [][]any
	// Changes are a delta's keyed changes, ordered by key. A delta carries
	// no row positions: a client that shows rows in the query's order
	// orders them itself.
	Changes []RowChange
	// Reset marks a snapshot sent because resuming from the requested
	// sequence number was impossible: the client must replace its state.
	// There is never a silent gap.
	Reset bool
	// Keyed is false when the result has no key; then every update is a
	// snapshot.
	Keyed bool
	// Err is why the subscription ended (UpdateError): an *api.Error such
	// as RESOURCE_EXHAUSTED (subscriber too slow) or UNAVAILABLE (the node
	// is shutting down).
	Err error
}

// Subscription is one live query subscriber.
//
// Updates go straight into a small channel. A subscriber that falls further
// behind than the channel holds gets an overflow queue and a pump goroutine
// that feeds the channel from it, in order, and exits once it is empty. A
// subscriber that keeps up thus costs about 1 KiB; one that lags holds up to
// SubscriptionBuffer updates, then is cut off. The notifier never blocks.
type Subscription struct {
	h  *Host
	a  *actor
	n  *notifier
	ch chan Update

	mu       sync.Mutex
	stop     func() bool   // unregisters the context.AfterFunc
	queue    []Update      // overflow, sent by the pump in order
	pumping  bool          // a pump goroutine is running
	pumpDone chan struct{} // closed when that pump exits
	ended    bool          // nothing more is accepted; ch closes once drained into
	chClosed bool
	closing  chan struct{} // closed by Close: the pump drops what is left
	closeReq bool

	releaseOnce sync.Once

	// Owned by the notifier goroutine.
	q   *liveQuery
	pos int // index in q.subs
	// Seq of the last update queued and whether there was one; written
	// by the notifier under mu.
	lastSeq uint64
	started bool
}

// subscriptionSlots is the channel capacity of a subscription: what a
// subscriber that keeps up needs, without a pump.
const subscriptionSlots = 8

func newSubscription(h *Host) *Subscription {
	return &Subscription{h: h, ch: make(chan Update, min(subscriptionSlots, h.cfg.SubscriptionBuffer)), closing: make(chan struct{})}
}

// Updates returns the subscription's updates. The first is a snapshot, or
// when resuming a delta (possibly empty: the client is current) or a
// snapshot with Reset. The channel is closed after a final UpdateError, or
// after Close.
func (s *Subscription) Updates() <-chan Update { return s.ch }

// Close ends the subscription: updates not yet received may still be read,
// then the channel is closed (by the time Close returns). It is safe to
// call more than once and from any goroutine.
func (s *Subscription) Close() { s.end(nil, true) }

type deliverResult int

const (
	delivered deliverResult = iota
	cutOff
	ended
)

// deliver queues u without blocking; only the notifier calls it. A
// subscriber already SubscriptionBuffer updates behind is cut off instead:
// its final update is the RESOURCE_EXHAUSTED error, after those it has not
// read yet.
func (s *Subscription) deliver(u Update, bound int) deliverResult {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return ended
	}
	if s.started && u.Seq <= s.lastSeq {
		// Cannot happen: updates are produced in commit order. Dropping
		// one keeps the per-subscription order promise if it ever did.
		s.mu.Unlock()
		s.h.log.Error("live query update out of order; dropped", "shard", s.a.id, "seq", u.Seq, "last", s.lastSeq)
		return delivered
	}
	if behind := len(s.ch) + len(s.queue); behind >= bound {
		s.ended = true
		s.pushLocked(Update{Kind: UpdateError, Seq: s.lastSeq, Err: api.Wrap(ErrSubscriberTooSlow, fmt.Sprintf("%d updates behind", behind))})
		s.closeIfDrainedLocked()
		s.mu.Unlock()
		s.release()
		return cutOff
	}
	s.pushLocked(u)
	s.lastSeq, s.started = u.Seq, true
	s.mu.Unlock()
	return delivered
}

// pushLocked sends u to the channel if it has room and no pump is
// running, else appends it to the overflow queue, starting a pump.
func (s *Subscription) pushLocked(u Update) {
	if !s.pumping && len(s.ch) < cap(s.ch) {
		s.ch <- u // never blocks: the pump is the only other sender
		return
	}
	s.queue = append(s.queue, u)
	if !s.pumping {
		s.pumping = true
		s.pumpDone = make(chan struct{})
		go s.pump(s.pumpDone)
	}
}

// closeIfDrainedLocked closes the channel of an ended subscription unless
// a pump still has updates to put in it (then the pump closes it).
func (s *Subscription) closeIfDrainedLocked() {
	if s.ended && !s.pumping && !s.chClosed {
		close(s.ch)
		s.chClosed = true
	}
}

// pump feeds the channel from the overflow queue, in order, until the
// queue is empty or Close is called.
func (s *Subscription) pump(done chan struct{}) {
	defer close(done)
	for {
		s.mu.Lock()
		if len(s.queue) == 0 || s.closeReq {
			s.queue, s.pumping = nil, false
			s.closeIfDrainedLocked()
			s.mu.Unlock()
			return
		}
		u := s.queue[0]
		s.mu.Unlock()
		select {
		case s.ch <- u:
			s.mu.Lock()
			s.queue[0] = Update{}
			s.queue = s.queue[1:]
			s.mu.Unlock()
		case <-s.closing:
		}
	}
}

// end ends the subscription: final (if not nil) is queued as its last
// update, the channel closes once what is queued has been put in it, and
// the subscription's hold on the shard is released. byClose is Close:
// what is queued is dropped and end waits for the channel to close.
func (s *Subscription) end(final *Update, byClose bool) {
	s.mu.Lock()
	if byClose && !s.closeReq {
		s.closeReq = true
		close(s.closing)
	}
	wasEnded := s.ended
	if !wasEnded {
		s.ended = true
		if final != nil {
			s.pushLocked(*final)
		}
	}
	s.closeIfDrainedLocked()
	var wait chan struct{}
	if byClose && s.pumping {
		wait = s.pumpDone
	}
	s.mu.Unlock()
	if wait != nil {
		<-wait
	}
	if !wasEnded {
		s.release()
		if s.n != nil {
			s.n.leave(s)
		}
	}
}

func (s *Subscription) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// release gives back the subscription's reference on the shard and its
// slot in the node's MaxSubscriptions, once.
func (s *Subscription) release() {
	s.releaseOnce.Do(func() {
		s.mu.Lock()
		stop := s.stop
		s.stop = nil
		s.mu.Unlock()
		if stop != nil {
			stop()
		}
		if s.a != nil {
			s.h.release(s.a)
		}
		s.h.m.subs.Add(-1)
		s.h.m.subscriptions.Dec()
	})
}

// Subscribe starts a live query: function must be a declared query function
// whose shard group matches shardID; args are raw and validated here like
// Call's. sinceSeq > 0 asks to resume after that commit sequence number:
// the first update is then a delta holding every change since (empty when
// nothing changed — the client is current), or a snapshot with Reset when
// the shard can no longer tell (its bounded history does not reach back
// that far, or the query's state was dropped).
//
// ctx bounds the call and the subscription's life: when it is done the
// subscription is closed. A live subscription keeps its shard active; all
// subscriptions of one (function, arguments) on a shard share one
// evaluation. Errors: NOT_FOUND (unknown function), INVALID_ARGUMENT (a
// mutation, bad arguments, a shard of another group), UNIMPLEMENTED (the
// global tier), RESOURCE_EXHAUSTED with a retry hint (MaxSubscriptions),
// UNAVAILABLE (shutting down), or the query's own error on its first run.
func (h *Host) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (sub *Subscription, err error) {
	start := time.Now()
	label := "unknown"
	defer func() { h.observe(label, start, err) }()
	fn := h.cfg.App.Function(function)
	if fn == nil {
		return nil, api.Wrap(ErrUnknownFunction, fmt.Sprintf("%q is not declared in lunora.yaml", function))
	}
	label = "subscribe " + fn.Name
	if fn.Kind != schema.Query {
		return nil, api.Wrap(ErrNotQuery, fmt.Sprintf("%s is a mutation", fn.Name))
	}
	if fn.Global() {
		return nil, api.Wrap(ErrGlobalLiveQuery, fmt.Sprintf("%s reads the global tier; subscribe to a query on a shard", fn.Name))
	}
	if shardID == schema.GlobalGroup {
		return nil, api.Wrap(ErrGlobalLiveQuery, "subscribe to a query on a shard")
	}
	shardID, group, key, bound, err := h.bindCall(fn, shardID, args)
	if err != nil {
		return nil, err
	}
	if n := h.m.subs.Add(1); n > int64(h.cfg.MaxSubscriptions) {
		h.m.subs.Add(-1)
		return nil, api.Wrap(ErrTooManySubscriptions, fmt.Sprintf("%d subscriptions", h.cfg.MaxSubscriptions))
	}
	h.m.subscriptions.Inc()
	sub = newSubscription(h)
	spec := querySpec{key: queryKey(fn.Name, bound), fn: fn, args: namedArgs(bound)}
	if fn.ReadsCaller {
		// The result depends on who asks: subscribers share an evaluation
		// only with the same identity, and re-runs see that identity.
		spec.caller = auth.FromContext(ctx)
		spec.key += callerKey(spec.caller)
	}
	err = h.withShard(ctx, shardID, group, key, func(a *actor) error {
		n, err := a.liveQueries()
		if err != nil {
			return err
		}
		h.retain(a)
		sub.a, sub.n = a, n
		return n.join(ctx, &joinRequest{sub: sub, spec: spec, since: sinceSeq, done: make(chan error, 1)})
	})
	if err != nil {
		sub.end(nil, true)
		return nil, err
	}
	sub.mu.Lock()
	if !sub.ended {
		sub.stop = context.AfterFunc(ctx, sub.Close)
	}
	sub.mu.Unlock()
	return sub, nil
}

// retain takes one more reference on an actor the caller already holds.
func (h *Host) retain(a *actor) {
	h.mu.Lock()
	a.refs++
	h.mu.Unlock()
}

// tablesRead reports the tables a function's statements read, as the
// authorizer sees them when they are prepared.
func (a *actor) tablesRead(ctx context.Context, stmts []string) ([]string, error) {
	r, err := a.reader(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { a.readers <- r }()
	r.Reset()
	reads, err := r.TablesRead(stmts)
	if err != nil {
		return nil, r.Classify(err, a.id)
	}
	return reads, nil
}

// querySpec identifies a live query on a shard: the function and its bound
// arguments.
type querySpec struct {
	key  string // function name and canonical arguments (and caller)
	fn   *schema.Function
	args []driver.NamedValue
	// caller is the subscriber's identity when fn reads it (lunora_auth);
	// nil otherwise, so that callers share the evaluation.
	caller *auth.Identity
}

// callerContext is ctx carrying the spec's caller, for running its query.
func (s querySpec) callerContext(ctx context.Context) context.Context {
	if s.caller == nil {
		return ctx
	}
	return auth.NewContext(ctx, s.caller)
}

// queryKey is the function's name and its bound arguments in a canonical
// form: subscriptions with equal keys share one evaluation.
func queryKey(function string, bound map[string]any) string {
	names := make([]string, 0, len(bound))
	for n := range bound {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(function)
	for _, n := range names {
		b.WriteByte(0)
		b.WriteString(n)
		b.WriteByte('=')
		switch v := bound[n].(type) {
		case nil:
			b.WriteString("n")
		case int64:
			b.WriteString("i" + strconv.FormatInt(v, 10))
		case float64:
			b.WriteString("f" + strconv.FormatFloat(v, 'g', -1, 64))
		case bool:
			b.WriteString("b" + strconv.FormatBool(v))
		case string:
			b.WriteString("s" + strconv.Quote(v))
		case []byte:
			b.WriteString("x" + strconv.Quote(string(v)))
		default:
			fmt.Fprintf(&b, "?%T:%v", v, v)
		}
	}
	return b.String()
}
