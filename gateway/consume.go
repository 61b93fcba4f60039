package gateway

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc/codes"
)

// The Consume stream (rpc.Consumer): an external consumer pulls a queue
// over gRPC. The gateway keeps at most prefetch messages unsettled on the
// stream, long-polls the backend for more whenever it holds fewer, and
// settles what the client acks, nacks or extends. When the stream ends —
// the client closed it, went away or was killed — the messages it still
// holds are nacked for redelivery at once; if that fails (the gateway is
// killed too), their visibility timeout brings them back.

const (
	// consumeWait is how long one backend receive of a stream waits for a
	// message.
	consumeWait = 10 * time.Second
	// consumeRetryMax bounds the back-off after a failed receive.
	consumeRetryMax = 5 * time.Second
	// consumeSettles is how many settle requests of one stream are served
	// at once.
	consumeSettles = 8
	// consumePullers is how many receives one stream has in flight at
	// once: each waits for its own leases' commits, and a queue's shards
	// lease in parallel.
	consumePullers = 4
	// releaseDelay is the nack delay of a stream's messages when it ends:
	// the shortest there is (0 would mean the queue's back-off).
	releaseDelay = time.Millisecond
)

// Consume serves one Consume stream: it authenticates and authorizes the
// caller (role service or admin), holds one of its client's live
// connection slots (Config.MaxWebSocketsPerClient) for the stream's life,
// and delivers until the stream ends. Counted with protocol="grpc",
// function="queue consume" when it starts.
func (g *Gateway) Consume(ctx context.Context, start rpc.ConsumeStart, stream rpc.ConsumeStream) error {
	began := time.Now()
	c, release, err := g.startConsume(ctx, start, stream)
	g.metrics.observe(protocolGRPC, consumeLabel, err, time.Since(began))
	if err != nil {
		return err
	}
	defer release()
	return c.run()
}

func (g *Gateway) startConsume(ctx context.Context, start rpc.ConsumeStart, stream rpc.ConsumeStream) (*consumer, func(), error) {
	ctx, err := g.grpcAuth(ctx)
	if err != nil {
		return nil, nil, err
	}
	id, err := g.caller(ctx)
	if err == nil {
		err = authorizeQueue(id)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := g.checkQueue(start.Queue); err != nil {
		return nil, nil, err
	}
	prefetch := start.Prefetch
	switch {
	case prefetch == 0:
		prefetch = DefaultPrefetch
	case prefetch < 0 || prefetch > MaxPrefetch:
		return nil, nil, api.Errorf(codes.InvalidArgument, "prefetch must be between 1 and %d, got %d", MaxPrefetch, prefetch)
	}
	if start.Visibility < 0 || start.Visibility > MaxVisibility {
		return nil, nil, api.Errorf(codes.InvalidArgument, "visibility_ms must be at most %d (%s)", MaxVisibility.Milliseconds(), MaxVisibility)
	}
	if !id.Expires.IsZero() && !time.Now().Before(id.Expires) {
		return nil, nil, expiredError(id.Expires)
	}
	key := grpcClientKey(ctx)
	release, err := g.limits.admitSocket(key)
	if err != nil {
		return nil, nil, err
	}
	c := &consumer{
		g: g, parent: ctx, key: key, queue: start.Queue, prefetch: prefetch, visibility: start.Visibility,
		expires: id.Expires, stream: stream, held: map[string]string{}, room: make(chan struct{}),
	}
	return c, release, nil
}

// consumer is one Consume stream's state.
type consumer struct {
	g          *Gateway
	parent     context.Context // the call's, carrying the identity
	key        string          // the client, for the per-client limits
	queue      string
	prefetch   int
	visibility time.Duration
	expires    time.Time // the credential's expiry; zero: none
	stream     rpc.ConsumeStream

	mu     sync.Mutex
	held   map[string]string // receipt → shard: delivered, not settled
	asked  int               // messages the pullers have asked the backend for, not yet back
	ended  bool              // no more sends, no more bookkeeping
	sendMu sync.Mutex        // with ended: nothing is sent once run returns
	room   chan struct{}     // closed and replaced when held or asked shrinks: wakes every waiting puller
}

// roomLocked wakes every puller waiting for room under prefetch; c.mu is
// held.
func (c *consumer) roomLocked() {
	close(c.room)
	c.room = make(chan struct{})
}

// run delivers and settles until the stream ends, then releases the
// messages the stream still holds.
func (c *consumer) run() error {
	ctx, cancel := context.WithCancel(c.parent)
	defer cancel()
	if !c.expires.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, c.expires)
		defer cancelDeadline()
	}
	// The reader cannot be waited for: Recv returns only when the client
	// sends or the call ends, which is after run returns. It stops
	// sending once ended is set.
	readErr := make(chan error, 1)
	go func() { readErr <- c.read(ctx) }()
	pullErr := make(chan error, 1)
	go func() { pullErr <- c.pull(ctx) }()
	var err error
	select {
	case err = <-readErr:
		cancel()
		<-pullErr
	case err = <-pullErr:
		cancel()
	}
	c.sendMu.Lock()
	c.ended = true
	c.sendMu.Unlock()
	c.release()
	if err == nil && !c.expires.IsZero() && !time.Now().Before(c.expires) && c.parent.Err() == nil {
		err = expiredError(c.expires)
	}
	return err
}

// send sends unless the stream has ended.
func (c *consumer) send(do func() error) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.ended {
		return api.New(codes.Canceled, "the stream ended")
	}
	return do()
}

// read serves the client's settle requests until it closes its side (the
// stream ends OK) or the call ends.
//
// Up to consumeSettles requests are settled at once (each waits for its
// shards' commits); their answers carry the request's request_id and may
// come in another order. Before it returns, read waits for the settles
// under way, so the stream's held messages are released only after them.
func (c *consumer) read(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, consumeSettles)
	for {
		req, err := c.stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil || api.CodeOf(err) != codes.InvalidArgument {
				return nil // the call ended: nothing to answer
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			res := c.settle(ctx, req)
			c.send(func() error { return c.stream.SendSettled(res) })
		}()
	}
}

// settle settles one request's receipts and forgets the settled ones.
func (c *consumer) settle(ctx context.Context, req rpc.ConsumeSettle) rpc.ConsumeSettled {
	out := rpc.ConsumeSettled{RequestID: req.RequestID, How: req.How}
	failAll := func(err error) rpc.ConsumeSettled {
		ae := asAPIError(err)
		for _, rc := range req.Receipts {
			out.Failed = append(out.Failed, rpc.ReceiptFailure{Receipt: rc, Code: ae.Code, Message: ae.Msg})
		}
		return out
	}
	start := time.Now()
	if err := c.g.limits.allow(c.key); err != nil {
		c.g.metrics.observe(protocolGRPC, settleLabel, err, 0)
		return failAll(err)
	}
	if err := checkSettle(req.How, len(req.Receipts), req.Delay); err != nil {
		c.g.metrics.observe(protocolGRPC, settleLabel, err, 0)
		return failAll(err)
	}
	byShard, receipts, bad := groupReceipts(req.Receipts)
	for _, b := range bad {
		out.Failed = append(out.Failed, rpc.ReceiptFailure{Receipt: b.Receipt, Code: b.Code, Message: b.Message})
	}
	if len(byShard) == 0 {
		c.g.metrics.observe(protocolGRPC, settleLabel, api.New(codes.InvalidArgument, "no valid receipt"), time.Since(start))
		return out
	}
	sctx, cancel := context.WithTimeout(ctx, c.g.cfg.RequestTimeout)
	defer cancel()
	s := c.g.settleShares(sctx, req.How, byShard, receipts, req.Delay)
	c.g.metrics.observe(protocolGRPC, settleLabel, s.err, time.Since(start))
	out.Settled = s.n
	for _, f := range s.failed {
		out.Failed = append(out.Failed, rpc.ReceiptFailure{Receipt: f.Receipt, Code: f.Code, Message: f.Message})
	}
	if req.How != api.Extend && len(s.done) > 0 {
		c.mu.Lock()
		for _, rc := range s.done {
			delete(c.held, rc)
		}
		c.roomLocked()
		c.mu.Unlock()
	}
	return out
}

// pull long-polls the backend for messages while the stream holds fewer
// than prefetch, and sends them. It ends with the stream's error for an
// answer no retry can change (an unknown queue, a refused caller), and
// retries the others with back-off.
func (c *consumer) pull(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, consumePullers)
	for range consumePullers {
		go func() { errs <- c.pullLoop(ctx) }()
	}
	// The first puller to stop (an error, or the stream ending) stops the
	// others.
	err := <-errs
	cancel()
	for range consumePullers - 1 {
		if e := <-errs; err == nil {
			err = e
		}
	}
	return err
}

// pullLoop is one of a stream's pullers: each asks the backend for its
// share of the room left under prefetch (held plus what the others have
// asked for), so the stream never holds more than prefetch.
func (c *consumer) pullLoop(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	share := max(1, (c.prefetch+consumePullers-1)/consumePullers)
	for {
		c.mu.Lock()
		want := min(share, c.prefetch-len(c.held)-c.asked)
		if want > 0 {
			c.asked += want
		}
		room := c.room
		c.mu.Unlock()
		if want <= 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-room:
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, consumeWait+c.g.cfg.RequestTimeout)
		asked := time.Now()
		msgs, err := c.g.backend.ReceiveMessages(rctx, c.queue, want, c.visibility, consumeWait)
		cancel()
		// Held in the same step as the ask ends: the room the other
		// pullers see counts these messages once, never twice or not
		// at all.
		c.received(msgs, want)
		if ctx.Err() != nil {
			// Messages leased as the stream ended are released with
			// the others.
			return nil
		}
		if err != nil {
			err = c.g.backendError(ctx, err, "receive from queue "+c.queue, "")
			switch api.CodeOf(err) {
			case codes.NotFound, codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.FailedPrecondition:
				return err
			}
			c.g.log.WarnContext(ctx, "consume: receive failed; retrying", "queue", c.queue, "err", err, "in", backoff)
			if !sleep(ctx, backoff/2+rand.N(backoff/2+1)) {
				return nil
			}
			backoff = min(2*backoff, consumeRetryMax)
			continue
		}
		backoff = 50 * time.Millisecond
		if len(msgs) > want {
			// A backend that answered more than asked: the stream keeps
			// them all (held may exceed prefetch until they settle).
			c.g.log.WarnContext(ctx, "consume: the backend answered more messages than asked", "queue", c.queue, "asked", want, "got", len(msgs))
		}
		for _, m := range msgs {
			if err := c.send(func() error { return c.stream.SendMessage(m) }); err != nil {
				return nil // the client is gone; what it holds is released
			}
		}
		if len(msgs) == 0 && time.Since(asked) < consumeWait/2 {
			// A backend that does not wait: do not spin on it.
			if !sleep(ctx, 100*time.Millisecond) {
				return nil
			}
		}
	}
}

// received records messages as delivered and unsettled, and the ask for
// want of them as answered; it wakes the pullers waiting for room.
func (c *consumer) received(msgs []api.QueueMessage, want int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		c.held[m.Receipt] = m.ShardID
	}
	c.asked -= want
	c.roomLocked()
}

// release nacks the messages the stream still holds so they are
// delivered again at once.
func (c *consumer) release() {
	c.mu.Lock()
	held := c.held
	c.held = map[string]string{}
	c.mu.Unlock()
	if len(held) == 0 {
		return
	}
	receipts := make([]string, 0, len(held))
	for rc := range held {
		receipts = append(receipts, rc)
	}
	byShard, byReceipt, bad := groupReceipts(receipts)
	for _, b := range bad {
		c.g.log.Warn("consume: a held message has a receipt that does not parse", "queue", c.queue, "receipt", b.Receipt)
	}
	// The call is over: the release runs on its own clock.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.parent), c.g.cfg.RequestTimeout)
	defer cancel()
	s := c.g.settleShares(ctx, api.Nack, byShard, byReceipt, releaseDelay)
	if len(s.failed) > 0 {
		c.g.log.WarnContext(ctx, "consume: could not release a closed stream's messages; their visibility timeout will", "queue", c.queue, "messages", len(s.failed), "err", s.failed[0].Message)
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

var _ rpc.Consumer = (*Gateway)(nil)
