package shardhost

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// Queues (ARCHITECTURE.md §8). A message is a row of the outbox of the
// shard whose mutation enqueued it (__lunora_outbox), written by
// lunora_enqueue inside the mutation's transaction, so it commits or rolls
// back with the mutation. Its dead letters are rows of
// __lunora_dead_messages. Both move with the shard file in a handoff.
//
// Delivery is at least once and FIFO per (shard, queue), as a FIFO queue's
// message group: messages are handed out from the head of the shard's
// outbox for the queue, in enqueue order, and while an earlier message is
// leased (delivered and neither acknowledged nor expired) or waiting out a
// back-off, the later ones wait. A lease is a write of the message's row
// (attempt+1, visible_ms = now + visibility timeout) committed before the
// message is handed out; an ack deletes the row; a nack makes it visible
// after the queue's back-off; a message delivered MaxAttempts times
// without an ack is dead-lettered at its next turn.
//
// The node keeps a durable hint of which shards have messages for which
// queue (queue_ready in Dir/alarms.db, next to the alarm index), so a
// consumer never makes it open every shard: before a commit that enqueues
// on a (shard, queue) the hint lacks, the hint is written (synchronously);
// after every commit that touched a queue its depth is recomputed from the
// shard file. The hint is removed only once the shard hibernates with the
// queue empty, or leaves the node. Dead letters have their own hint
// (queue_dead), kept the same way.

// The outbox is WITHOUT ROWID so that lunora_enqueue leaves the
// mutation's last_insert_rowid() alone; seq orders a queue's messages.
const outboxDDL = `CREATE TABLE IF NOT EXISTS __lunora_outbox (queue TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, visible_ms INTEGER NOT NULL DEFAULT 0, enqueued_ms INTEGER NOT NULL, error TEXT NOT NULL DEFAULT '', PRIMARY KEY (queue, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS __lunora_dead_messages (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL, enqueued_ms INTEGER NOT NULL, dead_ms INTEGER NOT NULL, error TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS __lunora_dead_messages_queue ON __lunora_dead_messages(queue, dead_ms)`

// MaxMessageBytes bounds one message body.
const MaxMessageBytes = 256 << 10

// MaxReceive bounds the messages one Receive hands out, and the IDs one
// settle names.
const MaxReceive = 1000

// nextSeq is the seq of a message appended to queue ?1.
const nextSeq = "(SELECT coalesce(max(seq), 0) + 1 FROM __lunora_outbox WHERE queue = ?1)"

func newMessageID() string {
	var b [12]byte
	rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}

// queueTxn is what the transaction under way did to the shard's queues;
// owned by the writer goroutine.
type queueTxn struct {
	enqueued map[string]bool // queues written to: the ready hint must exist before the commit
	touched  map[string]bool // queues whose outbox changed: recompute after it
	dead     map[string]bool // queues whose dead letters changed
}

func (t *queueTxn) mark(m *map[string]bool, queue string) {
	if *m == nil {
		*m = map[string]bool{}
	}
	(*m)[queue] = true
}

// Enqueue is lunora_enqueue: it runs on the writer goroutine inside the
// mutation's statement.
func (s *alarmSched) Enqueue(queue, body string) (string, error) {
	a := s.a
	q := a.h.cfg.App.Queue(queue)
	if q == nil {
		return "", api.Errorf(codes.InvalidArgument, "lunora_enqueue: queue %q is not declared under queues: in lunora.yaml", queue)
	}
	if len(body) > MaxMessageBytes {
		return "", api.Errorf(codes.InvalidArgument, "lunora_enqueue: the body is %d bytes, over the limit of %d", len(body), MaxMessageBytes)
	}
	if !json.Valid([]byte(body)) {
		return "", api.Errorf(codes.InvalidArgument, "lunora_enqueue: the body must be JSON, e.g. json_object('room', :room); got %.60q", body)
	}
	if q.Consumer != "" {
		// A message its consumer could never run is refused now, with the
		// mutation, rather than dead-lettered later.
		if _, _, err := a.h.consumerCall(q, body); err != nil {
			return "", api.Errorf(codes.InvalidArgument, "lunora_enqueue: queue %s: %v", queue, err.Error())
		}
	}
	now := a.h.cfg.Now().UnixMilli()
	id := newMessageID()
	if _, err := a.w.ExecSys("INSERT INTO __lunora_outbox(queue, seq, id, body, attempt, visible_ms, enqueued_ms) VALUES (?1, "+nextSeq+", ?2, ?3, 0, 0, ?4)",
		driver.NamedValue{Ordinal: 1, Value: queue}, driver.NamedValue{Ordinal: 2, Value: id},
		driver.NamedValue{Ordinal: 3, Value: body}, driver.NamedValue{Ordinal: 4, Value: now}); err != nil {
		return "", api.Errorf(codes.Internal, "lunora_enqueue: write the outbox: %v", err)
	}
	s.q.mark(&s.q.enqueued, queue)
	s.q.mark(&s.q.touched, queue)
	a.h.m.queueEvents.WithLabelValues(queue, "enqueued").Inc()
	return id, nil
}

// consumerCall is the shard and arguments a message of q runs its
// consumer with.
func (h *Host) consumerCall(q *schema.Queue, body string) (string, map[string]any, error) {
	fn := h.cfg.App.Function(q.Consumer)
	if fn == nil {
		return "", nil, api.Errorf(codes.FailedPrecondition, "consumer %s is no longer declared", q.Consumer)
	}
	args, err := decodeAlarmArgs(body)
	if err != nil {
		return "", nil, api.Errorf(codes.InvalidArgument, "the body must be a JSON object of %s's arguments: %v", fn.Name, err)
	}
	shardID, bound, err := h.cfg.App.ResolveShard(fn, args, "")
	if err != nil {
		return "", nil, api.Errorf(api.CodeOf(err), "consumer %s: %s", fn.Name, err.Error())
	}
	return shardID, bound, nil
}

// queuesBeforeCommit makes the node's hints durable for every queue the
// transaction enqueued on or dead-lettered to: an error fails the commit.
func (a *actor) queuesBeforeCommit() error {
	t := &a.sched.q
	for q := range t.enqueued {
		if err := a.h.alarms.announceReady(a.id, q); err != nil {
			return err
		}
	}
	for q := range t.dead {
		if err := a.h.alarms.announceDead(a.id, q); err != nil {
			return err
		}
	}
	return nil
}

// queuesAfterCommit recomputes, from the shard file, the node's view of
// every queue the transaction that just ended (committed or not) touched.
func (a *actor) queuesAfterCommit() {
	t := &a.sched.q
	for q := range t.touched {
		a.reindexQueue(q)
	}
	for q := range t.dead {
		a.reindexDead(q)
	}
	*t = queueTxn{}
}

// queueState is one (shard, queue)'s outbox: its depth, the enqueue time
// of its oldest message, and when its head can next be delivered.
type queueState struct {
	depth, oldest, next int64
}

func readQueueState(c *sqlitex.Conn, queue string) (queueState, error) {
	_, rows, err := c.QueryRows(context.Background(),
		"SELECT count(*), min(enqueued_ms), (SELECT visible_ms FROM __lunora_outbox WHERE queue = ?1 ORDER BY seq LIMIT 1) FROM __lunora_outbox WHERE queue = ?1",
		[]driver.NamedValue{{Ordinal: 1, Value: queue}}, sqlitex.Limits{MaxRows: 1, MaxBytes: 256})
	if err != nil || len(rows) != 1 {
		return queueState{}, err
	}
	return queueState{depth: asInt(rows[0][0]), oldest: asInt(rows[0][1]), next: asInt(rows[0][2])}, nil
}

func readDeadCount(c *sqlitex.Conn, queue string) (int64, error) {
	_, rows, err := c.QueryRows(context.Background(), "SELECT count(*) FROM __lunora_dead_messages WHERE queue = ?",
		[]driver.NamedValue{{Ordinal: 1, Value: queue}}, sqlitex.Limits{MaxRows: 1, MaxBytes: 64})
	if err != nil || len(rows) != 1 {
		return 0, err
	}
	return asInt(rows[0][0]), nil
}

func (a *actor) reindexQueue(queue string) {
	st, err := readQueueState(a.w, queue)
	if err != nil {
		a.h.log.Warn("read the shard's queue", "shard", a.id, "queue", queue, "err", err)
		return
	}
	if err := a.h.alarms.setReady(a.id, queue, st); err != nil {
		a.h.log.Warn("update the queue index", "shard", a.id, "queue", queue, "err", err)
	}
}

func (a *actor) reindexDead(queue string) {
	n, err := readDeadCount(a.w, queue)
	if err != nil {
		a.h.log.Warn("read the shard's dead letters", "shard", a.id, "queue", queue, "err", err)
		return
	}
	if err := a.h.alarms.setDead(a.id, queue, n); err != nil {
		a.h.log.Warn("update the queue index", "shard", a.id, "queue", queue, "err", err)
	}
}

// reindexQueues recomputes every declared queue of the shard from its
// file (on activation: a shard received, restored or left early).
func (a *actor) reindexQueues() {
	names := a.h.cfg.App.QueueNames()
	if len(names) == 0 {
		return
	}
	ready, err := countByQueue(a.w, "__lunora_outbox")
	if err != nil {
		a.h.log.Warn("read the shard's queues", "shard", a.id, "err", err)
		return
	}
	dead, err := countByQueue(a.w, "__lunora_dead_messages")
	if err != nil {
		a.h.log.Warn("read the shard's dead letters", "shard", a.id, "err", err)
		return
	}
	for _, q := range names {
		if ready[q] > 0 {
			a.reindexQueue(q)
		} else if err := a.h.alarms.setReady(a.id, q, queueState{}); err != nil {
			a.h.log.Warn("update the queue index", "shard", a.id, "queue", q, "err", err)
		}
		if err := a.h.alarms.setDead(a.id, q, dead[q]); err != nil {
			a.h.log.Warn("update the queue index", "shard", a.id, "queue", q, "err", err)
		}
	}
}

// outboxRow is one message as the writer reads it.
type outboxRow struct {
	id, queue, body, err   string
	attempt, visible, enqd int64
}

func (r outboxRow) message(shardID string) api.QueueMessage {
	return api.QueueMessage{ID: r.id, Queue: r.queue, ShardID: shardID, Body: r.body, Attempt: int(r.attempt),
		Enqueued: time.UnixMilli(r.enqd), VisibleUntil: time.UnixMilli(r.visible), Receipt: api.ReceiptOf(shardID, r.id), Error: r.err}
}

func scanOutbox(rows [][]any) []outboxRow {
	out := make([]outboxRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, outboxRow{id: r[0].(string), queue: r[1].(string), body: r[2].(string), attempt: asInt(r[3]),
			visible: asInt(r[4]), enqd: asInt(r[5]), err: r[6].(string)})
	}
	return out
}

const outboxCols = "id, queue, body, attempt, visible_ms, enqueued_ms, error"

// lease is the writer's op behind Receive: it leases up to max messages
// from the head of the shard's outbox for q, dead-lettering those that
// used their attempts.
func (a *actor) lease(q *schema.Queue, limit int, visibility time.Duration, out *[]api.QueueMessage) func() (bool, error) {
	return func() (bool, error) {
		*out = (*out)[:0]
		now := a.h.cfg.Now().UnixMilli()
		a.sched.q.mark(&a.sched.q.touched, q.Name)
		for len(*out) < limit {
			_, rows, err := a.w.QueryRows(context.Background(), "SELECT "+outboxCols+" FROM __lunora_outbox WHERE queue = ? ORDER BY seq LIMIT ?",
				[]driver.NamedValue{{Ordinal: 1, Value: q.Name}, {Ordinal: 2, Value: int64(limit - len(*out))}}, sqlitex.Limits{MaxRows: limit, MaxBytes: 1 << 40})
			if err != nil {
				return false, err
			}
			if len(rows) == 0 {
				return false, nil
			}
			deadLettered := false
			for _, r := range scanOutbox(rows) {
				if r.visible > now {
					return false, nil // the head is leased or backing off: FIFO
				}
				if r.attempt >= int64(q.MaxAttempts) {
					cause := r.err
					if cause == "" {
						cause = fmt.Sprintf("delivered %d times without an ack (visibility timeout %s)", r.attempt, q.VisibilityTimeout)
					}
					if err := a.deadLetter(q, r, cause, now); err != nil {
						return false, err
					}
					deadLettered = true
					continue
				}
				r.attempt++
				r.visible = now + visibility.Milliseconds()
				if _, err := a.w.ExecSys("UPDATE __lunora_outbox SET attempt = ?, visible_ms = ? WHERE id = ?",
					driver.NamedValue{Ordinal: 1, Value: r.attempt}, driver.NamedValue{Ordinal: 2, Value: r.visible}, driver.NamedValue{Ordinal: 3, Value: r.id}); err != nil {
					return false, err
				}
				*out = append(*out, r.message(a.id))
			}
			if !deadLettered {
				return false, nil // every row read was leased
			}
		}
		return false, nil
	}
}

// deadLetter moves a message out of the outbox: onto the queue's
// dead-letter queue (in this shard's outbox) when it names one, else into
// the shard's dead letters.
func (a *actor) deadLetter(q *schema.Queue, r outboxRow, cause string, now int64) error {
	if _, err := a.w.ExecSys("DELETE FROM __lunora_outbox WHERE id = ?", driver.NamedValue{Ordinal: 1, Value: r.id}); err != nil {
		return err
	}
	a.h.m.queueEvents.WithLabelValues(q.Name, "dead").Inc()
	if q.DeadLetter != "" {
		if _, err := a.w.ExecSys("INSERT INTO __lunora_outbox(queue, seq, id, body, attempt, visible_ms, enqueued_ms, error) VALUES (?1, "+nextSeq+", ?2, ?3, 0, 0, ?4, ?5)",
			driver.NamedValue{Ordinal: 1, Value: q.DeadLetter}, driver.NamedValue{Ordinal: 2, Value: r.id},
			driver.NamedValue{Ordinal: 3, Value: r.body}, driver.NamedValue{Ordinal: 4, Value: now},
			driver.NamedValue{Ordinal: 5, Value: truncate(cause, 1024)}); err != nil {
			return err
		}
		a.sched.q.mark(&a.sched.q.enqueued, q.DeadLetter)
		a.sched.q.mark(&a.sched.q.touched, q.DeadLetter)
		return nil
	}
	if _, err := a.w.ExecSys("INSERT OR REPLACE INTO __lunora_dead_messages(id, queue, body, attempts, enqueued_ms, dead_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
		driver.NamedValue{Ordinal: 1, Value: r.id}, driver.NamedValue{Ordinal: 2, Value: q.Name},
		driver.NamedValue{Ordinal: 3, Value: r.body}, driver.NamedValue{Ordinal: 4, Value: r.attempt},
		driver.NamedValue{Ordinal: 5, Value: r.enqd}, driver.NamedValue{Ordinal: 6, Value: now},
		driver.NamedValue{Ordinal: 7, Value: truncate(cause, 1024)}); err != nil {
		return err
	}
	a.sched.q.mark(&a.sched.q.dead, q.Name)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// settleHow is what becomes of settled messages, inside the shard runtime:
// api's verbs plus release (handed back unattempted: the attempt the lease
// counted is undone).
type settleHow int

const (
	settleAck settleHow = iota
	settleNack
	settleExtend
	settleRelease
)

// settle is the writer's op behind acks, nacks, extends and releases of
// messages of this shard. *n counts the messages it changed.
func (a *actor) settle(how settleHow, ids []string, delay time.Duration, cause string, n *int) func() (bool, error) {
	return func() (bool, error) {
		*n = 0
		now := a.h.cfg.Now().UnixMilli()
		for _, id := range ids {
			_, rows, err := a.w.QueryRows(context.Background(), "SELECT "+outboxCols+" FROM __lunora_outbox WHERE id = ?",
				[]driver.NamedValue{{Ordinal: 1, Value: id}}, sqlitex.Limits{MaxRows: 1, MaxBytes: 1 << 30})
			if err != nil {
				return false, err
			}
			if len(rows) == 0 {
				continue // acknowledged already, or dead-lettered
			}
			r := scanOutbox(rows)[0]
			q := a.h.cfg.App.Queue(r.queue)
			a.sched.q.mark(&a.sched.q.touched, r.queue)
			var sql string
			var args []driver.NamedValue
			switch how {
			case settleAck:
				sql, args = "DELETE FROM __lunora_outbox WHERE id = ?", []driver.NamedValue{{Ordinal: 1, Value: id}}
				a.h.m.queueEvents.WithLabelValues(r.queue, "acked").Inc()
			case settleExtend:
				if r.visible <= now {
					continue // the lease already ended: it may be someone else's now
				}
				sql, args = "UPDATE __lunora_outbox SET visible_ms = ? WHERE id = ?", []driver.NamedValue{{Ordinal: 1, Value: now + delay.Milliseconds()}, {Ordinal: 2, Value: id}}
			case settleRelease:
				sql, args = "UPDATE __lunora_outbox SET visible_ms = 0, attempt = max(attempt - 1, 0) WHERE id = ?", []driver.NamedValue{{Ordinal: 1, Value: id}}
			case settleNack:
				a.h.m.queueEvents.WithLabelValues(r.queue, "nacked").Inc()
				if q == nil || r.attempt >= int64(q.MaxAttempts) {
					if q == nil {
						q = &schema.Queue{Name: r.queue}
					}
					if err := a.deadLetter(q, r, cause, now); err != nil {
						return false, err
					}
					*n++
					continue
				}
				d := delay
				if d <= 0 {
					d = q.Delay(int(r.attempt))
				}
				sql, args = "UPDATE __lunora_outbox SET visible_ms = ?, error = ? WHERE id = ?", []driver.NamedValue{{Ordinal: 1, Value: now + d.Milliseconds()}, {Ordinal: 2, Value: truncate(cause, 1024)}, {Ordinal: 3, Value: id}}
			}
			if _, err := a.w.ExecSys(sql, args...); err != nil {
				return false, err
			}
			*n++
		}
		return false, nil
	}
}

// redrive is the writer's op that moves dead letters of queue (ids empty:
// all) back to the tail of its outbox, with their attempts reset.
func (a *actor) redrive(queue string, ids []string, n *int) func() (bool, error) {
	return func() (bool, error) {
		*n = 0
		where, args := "queue = ?1", []driver.NamedValue{{Ordinal: 1, Value: queue}}
		if len(ids) > 0 {
			where += " AND id IN (SELECT value FROM json_each(?2))"
			b, _ := json.Marshal(ids)
			args = append(args, driver.NamedValue{Ordinal: 2, Value: string(b)})
		}
		moved, err := a.w.ExecSys("INSERT INTO __lunora_outbox(queue, seq, id, body, attempt, visible_ms, enqueued_ms) SELECT queue, (SELECT coalesce(max(seq), 0) FROM __lunora_outbox WHERE queue = ?1) + row_number() OVER (ORDER BY dead_ms, id), id, body, 0, 0, enqueued_ms FROM __lunora_dead_messages WHERE "+where, args...)
		if err != nil {
			return false, err
		}
		if _, err := a.w.ExecSys("DELETE FROM __lunora_dead_messages WHERE "+where, args...); err != nil {
			return false, err
		}
		*n = int(moved)
		if moved > 0 {
			a.sched.q.mark(&a.sched.q.enqueued, queue)
			a.sched.q.mark(&a.sched.q.touched, queue)
			a.sched.q.mark(&a.sched.q.dead, queue)
			a.h.m.queueEvents.WithLabelValues(queue, "redriven").Add(float64(moved))
		}
		return false, nil
	}
}

// runOp runs op on the shard's writer, group-committed with whatever else
// is queued, and waits for the commit.
func (a *actor) runOp(ctx context.Context, op func() (bool, error)) error {
	m := &mutation{ctx: ctx, op: op, done: make(chan struct{})}
	if err := a.mailbox.offer(m, a.id); err != nil {
		return err
	}
	select {
	case <-m.done:
		return m.err
	case <-ctx.Done():
		return api.Errorf(api.CodeOf(ctx.Err()), "shard %s: %v while waiting for the commit", a.id, ctx.Err())
	}
}

// onHeldShard runs fn on a shard this node holds: one that is active, or
// whose file is here. It never creates a shard; one that is not here
// answers ErrShardElsewhere.
func (h *Host) onHeldShard(ctx context.Context, id string, fn func(*actor) error) error {
	group, key, err := h.cfg.App.ParseShardID(id)
	if err != nil {
		return err
	}
	if group == schema.GlobalGroup {
		return errGlobalNotShard
	}
	if group == schema.RootShard {
		id = schema.RootShard
	}
	h.mu.Lock()
	_, active := h.actors[id]
	h.mu.Unlock()
	if !active && !hasFile(h.shardPath(id)) && !hasFile(h.shardPath(id)+".incoming") {
		return api.Wrap(ErrShardElsewhere, fmt.Sprintf("shard %s is not on node %s", id, h.cfg.NodeID))
	}
	return h.withShard(ctx, id, group, key, fn)
}

// ReceiveMessages leases up to limit messages of queue that are ready on shards this
// node holds, waiting up to wait for one. Each lease ends after visibility
// (0: the queue's visibility timeout): unless acknowledged or extended by
// then, the message is delivered again.
func (h *Host) ReceiveMessages(ctx context.Context, queue string, limit int, visibility, wait time.Duration) (msgs []api.QueueMessage, err error) {
	start := time.Now()
	defer func() { h.observe("queue:receive", start, err) }()
	q := h.cfg.App.Queue(queue)
	if q == nil {
		return nil, api.Errorf(codes.NotFound, "queue %q is not declared in lunora.yaml", queue)
	}
	switch {
	case limit < 1 || limit > MaxReceive:
		return nil, api.Errorf(codes.InvalidArgument, "max must be between 1 and %d, not %d", MaxReceive, limit)
	case visibility == 0:
		visibility = q.VisibilityTimeout
	case visibility < time.Second || visibility > schema.MaxQueueVisibility:
		return nil, api.Errorf(codes.InvalidArgument, "visibility must be between 1s and %s, not %s", schema.MaxQueueVisibility, visibility)
	}
	if wait < 0 || wait > 60*time.Second {
		return nil, api.Errorf(codes.InvalidArgument, "wait must be between 0 and 60s, not %s", wait)
	}
	deadline := time.Now().Add(wait)
	for {
		changed := h.alarms.queueChanged(queue)
		shards, next := h.alarms.takeReady(queue, h.cfg.Now().UnixMilli())
		got, err := h.leaseFrom(ctx, q, shards, limit, visibility)
		msgs = got
		if err != nil {
			return msgs, err
		}
		if len(msgs) > 0 {
			return msgs, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		if next != 0 {
			left = min(left, time.Duration(next-h.cfg.Now().UnixMilli())*time.Millisecond)
		}
		t := time.NewTimer(max(left, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, api.Errorf(api.CodeOf(ctx.Err()), "receive from queue %s: %v", queue, ctx.Err())
		case <-h.stop:
			t.Stop()
			return nil, ErrClosed
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// leaseParallel bounds the shards one Receive leases from at once: each
// lease is a commit of its own shard, and they sync in parallel.
const leaseParallel = 16

// leaseFrom leases up to limit messages of q from shards (taken with
// takeReady; each is untaken when done), a share of limit each, several
// shards at once. Messages keep each shard's order. An error is returned
// only when nothing was leased.
func (h *Host) leaseFrom(ctx context.Context, q *schema.Queue, shards []string, limit int, visibility time.Duration) ([]api.QueueMessage, error) {
	if len(shards) > limit {
		h.alarms.untake(q.Name, shards[limit:])
		shards = shards[:limit]
	}
	if len(shards) == 0 {
		return nil, nil
	}
	share := limit / len(shards)
	type result struct {
		msgs []api.QueueMessage
		err  error
	}
	results := make([]result, len(shards))
	sem := make(chan struct{}, leaseParallel)
	var wg sync.WaitGroup
	for i, id := range shards {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var got []api.QueueMessage
			err := h.onHeldShard(ctx, id, func(a *actor) error {
				return a.runOp(ctx, a.lease(q, share, visibility, &got))
			})
			h.alarms.untake(q.Name, []string{id})
			if err != nil {
				// got is not ours to read: a commit given up on may
				// still be running the op.
				results[i] = result{err: err}
				return
			}
			results[i] = result{msgs: got}
		}()
	}
	wg.Wait()
	var msgs []api.QueueMessage
	var firstErr error
	for i, r := range results {
		id := shards[i]
		switch {
		case r.err == nil:
			msgs = append(msgs, r.msgs...)
			h.m.queueEvents.WithLabelValues(q.Name, "delivered").Add(float64(len(r.msgs)))
			for _, m := range r.msgs {
				if m.Attempt > 1 {
					h.m.queueEvents.WithLabelValues(q.Name, "redelivered").Inc()
				}
			}
		case errors.Is(r.err, ErrShardElsewhere):
			h.alarms.forgetShard(id)
		case errors.Is(r.err, ErrClosed):
			firstErr = r.err
		case ctx.Err() != nil:
			// The receiver left: a lease that commits anyway comes back
			// after its visibility timeout.
			firstErr = api.Errorf(api.CodeOf(ctx.Err()), "receive from queue %s: %v", q.Name, ctx.Err())
		default:
			h.log.Warn("receive from a shard's queue", "shard", id, "queue", q.Name, "err", r.err)
			if firstErr == nil {
				firstErr = r.err
			}
		}
	}
	if len(msgs) > 0 {
		return msgs, nil
	}
	return nil, firstErr
}

// SettleMessages acknowledges, nacks (delay 0: the queue's back-off) or
// extends (to delay from now) messages of one shard, by ID, and answers
// how many it changed. A shard not held here answers ErrShardElsewhere.
func (h *Host) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (n int, err error) {
	start := time.Now()
	defer func() { h.observe("queue:"+how.String(), start, err) }()
	var sh settleHow
	cause := ""
	switch how {
	case api.Ack:
		sh = settleAck
	case api.Nack:
		sh, cause = settleNack, "nacked by a consumer"
		if delay < 0 || delay > schema.MaxQueueVisibility {
			return 0, api.Errorf(codes.InvalidArgument, "a nack's delay must be between 0 and %s, not %s", schema.MaxQueueVisibility, delay)
		}
	case api.Extend:
		sh = settleExtend
		if delay < time.Second || delay > schema.MaxQueueVisibility {
			return 0, api.Errorf(codes.InvalidArgument, "an extend's visibility must be between 1s and %s, not %s", schema.MaxQueueVisibility, delay)
		}
	default:
		return 0, api.Errorf(codes.InvalidArgument, "unknown settle verb %d", how)
	}
	return h.settleOn(ctx, shardID, sh, ids, delay, cause)
}

func (h *Host) settleOn(ctx context.Context, shardID string, how settleHow, ids []string, delay time.Duration, cause string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if len(ids) > MaxReceive {
		return 0, api.Errorf(codes.InvalidArgument, "%d message IDs; at most %d at a time", len(ids), MaxReceive)
	}
	for _, id := range ids {
		if !strings.HasPrefix(id, "msg_") || len(id) > 64 {
			return 0, api.Errorf(codes.InvalidArgument, "%.80q is not a message ID", id)
		}
	}
	var n int
	if err := h.onHeldShard(ctx, shardID, func(a *actor) error {
		return a.runOp(ctx, a.settle(how, ids, delay, cause, &n))
	}); err != nil {
		return 0, err // n is not ours to read: the op may still run
	}
	return n, nil
}

// DeadMessages lists dead letters of queue ("" = every queue) on shards
// held here, oldest first, up to limit.
func (h *Host) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	if queue != "" && h.cfg.App.Queue(queue) == nil {
		return nil, api.Errorf(codes.NotFound, "queue %q is not declared in lunora.yaml", queue)
	}
	if limit < 1 || limit > 10000 {
		return nil, api.Errorf(codes.InvalidArgument, "limit must be between 1 and 10000, not %d", limit)
	}
	var out []api.QueueMessage
	for _, d := range h.alarms.deadShards(queue) {
		var got []api.QueueMessage
		err := h.onHeldShard(ctx, d.shard, func(a *actor) error {
			r, err := a.reader(ctx)
			if err != nil {
				return err
			}
			defer func() { a.readers <- r }()
			_, rows, err := r.QueryRows(ctx, "SELECT id, queue, body, attempts, enqueued_ms, dead_ms, error FROM __lunora_dead_messages WHERE queue = ? ORDER BY dead_ms LIMIT ?",
				[]driver.NamedValue{{Ordinal: 1, Value: d.queue}, {Ordinal: 2, Value: int64(limit)}}, sqlitex.Limits{MaxRows: limit, MaxBytes: 1 << 40})
			if err != nil {
				return err
			}
			for _, row := range rows {
				id := row[0].(string)
				got = append(got, api.QueueMessage{ID: id, Queue: row[1].(string), ShardID: a.id, Body: row[2].(string), Attempt: int(asInt(row[3])),
					Enqueued: time.UnixMilli(asInt(row[4])), Died: time.UnixMilli(asInt(row[5])), Error: row[6].(string), Receipt: api.ReceiptOf(a.id, id)})
			}
			return nil
		})
		if errors.Is(err, ErrShardElsewhere) {
			h.alarms.forgetShard(d.shard)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	sortDead(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Redrive moves the dead letters of queue on shards held here (ids empty:
// all of them) back onto the queue, and answers how many.
func (h *Host) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	if h.cfg.App.Queue(queue) == nil {
		return 0, api.Errorf(codes.NotFound, "queue %q is not declared in lunora.yaml", queue)
	}
	if len(ids) > MaxReceive {
		return 0, api.Errorf(codes.InvalidArgument, "%d message IDs; at most %d at a time", len(ids), MaxReceive)
	}
	total := 0
	for _, d := range h.alarms.deadShards(queue) {
		var n int
		err := h.onHeldShard(ctx, d.shard, func(a *actor) error {
			return a.runOp(ctx, a.redrive(queue, ids, &n))
		})
		if errors.Is(err, ErrShardElsewhere) {
			h.alarms.forgetShard(d.shard)
			continue
		}
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}
