package shardhost

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// mutation is one queued write: a function's statements or one admin
// statement, run by the shard's writer goroutine.
type mutation struct {
	ctx  context.Context
	sql  []string
	args []driver.NamedValue
	res  *api.Result
	err  error
	done chan struct{}
	// held is the result's reservation from the node's result budget,
	// set by the writer; whoever takes res releases it.
	held int64
	// fire asks the writer to run the shard's due alarms (alarms.go);
	// attempt is lunora_attempt() while an alarm's function runs.
	fire    bool
	attempt int64
	// shed asks the writer to drop its prepared statements and free its
	// page cache: the shard has been unused for ShedAfter (hibernate.go).
	shed bool
	// op, when set, runs in place of sql: the shard runtime's own write
	// (a queue's lease, ack, nack — queues.go) group-committed with the
	// mutations around it. It reports whether it changed user data.
	op func() (bool, error)
}

// mutate queues a write on the shard's writer and waits for its
// acknowledgement, which comes only after the group commit holding it is
// durable. A full mailbox is refused at once (RESOURCE_EXHAUSTED with a
// retry hint), never queued without bound.
//
// The result's bytes stay reserved from the node's result budget; they are
// added to *held for the caller to release.
func (a *actor) mutate(ctx context.Context, stmts []string, args []driver.NamedValue, held *int64) (*api.Result, error) {
	m := &mutation{ctx: ctx, sql: stmts, args: args, done: make(chan struct{})}
	if err := a.mailbox.offer(m, a.id); err != nil {
		return nil, err
	}
	select {
	case <-m.done:
		*held += m.held
		return m.res, m.err
	case <-ctx.Done():
		go func() {
			<-m.done
			a.h.budget.Release(m.held)
		}()
		// The mutation may still commit: the caller cannot know, as with any
		// RPC whose deadline passes.
		return nil, api.Errorf(api.CodeOf(ctx.Err()), "shard %s: %v while waiting for the commit; the mutation may or may not have been applied", a.id, ctx.Err())
	}
}

// runWriter is the shard's single writer goroutine: it takes whatever is
// queued (up to MaxBatch) and group-commits it.
func (a *actor) runWriter() {
	defer close(a.writerDone)
	a.cur = &batch{a: a, first: a.seq + 1, last: a.seq}
	var got []*mutation
	for a.mailbox.wait() {
		a.h.m.mailboxDepth.Observe(float64(a.mailbox.len()))
		if cap(got) > idleCap {
			got = nil // a burst's batch is not kept for a quiet shard
		}
		got = a.mailbox.drain(got[:0], a.h.cfg.MaxBatch)
		if a.waitPipeline() {
			// Mutations queued while the writer waited join the batch.
			got = a.mailbox.drain(got, a.h.cfg.MaxBatch)
		}
		if hook := a.h.cfg.BeforeBatch; hook != nil {
			hook(a.id)
		}
		start := time.Now()
		fire, shed := false, false
		calls := got[:0:0]
		for _, m := range got {
			switch {
			case m.fire:
				fire = true
			case m.shed:
				shed = true
			default:
				calls = append(calls, m)
			}
		}
		// The batch's mutations are acknowledged when it is complete: at
		// once in shard mode, after the node's next durability round in
		// node mode (syncer.go); the writer goes on meanwhile.
		a.cur.ms = append([]*mutation(nil), got...)
		if _, _, err := a.dur.state(); err != nil {
			// A sync of this shard failed: nothing more is committed on it
			// until it hibernates and reopens.
			a.failAll(calls, api.Errorf(codes.Unavailable, "shard %s: a write-ahead log sync failed (%v); writes are refused until the shard reopens", a.id, err))
			calls, fire = nil, false
		}
		if len(calls) > 0 {
			a.groupCommit(calls)
			if a.sched.touched || len(a.sched.q.dead) > 0 {
				// The alarm index and the dead-letter hints are derived
				// from the commit and may be raised or removed by it: it
				// must be durable first. The ready hints need not wait:
				// after a commit they only change in memory or grow
				// (queueindex.go), and a message reaches a consumer only
				// through a lease, acknowledged after its own round.
				a.syncNow()
			}
			a.alarmsAfterCommit()
			a.queuesAfterCommit()
		}
		if fire {
			a.fireAlarms()
		}
		if shed && len(calls) == 0 && !fire {
			// Only when the shard is still quiet: a batch with work in it
			// is about to need its statements again.
			a.w.DropStatements()
			a.w.ReleaseMemory()
			a.h.closedSinceTrim.Add(1)
		}
		a.h.m.commitLatency.Observe(time.Since(start).Seconds())
		a.h.m.batchSize.Observe(float64(len(got)))
		a.flush(false)
	}
	// Hibernation closes the connections next: every commit must be
	// durable (and acknowledged) first.
	a.flush(true)
}

// groupCommit runs each mutation of the batch in its own SAVEPOINT inside
// one transaction, rolls back only the failing ones, stores the new commit
// sequence number in the same transaction and commits once. Each mutation
// that changed data gets the next sequence number, so sequence numbers are
// strictly increasing in commit order.
//
// If SQLite itself abandons the transaction (an interrupted statement, a
// disk error), the mutation that caused it fails and the others are run
// again in a fresh transaction.
func (a *actor) groupCommit(batch []*mutation) {
	pending := batch
	for len(pending) > 0 {
		startSeq := a.seq
		if _, err := a.w.ExecSys("BEGIN IMMEDIATE"); err != nil {
			a.failAll(pending, a.w.Classify(err, a.id))
			return
		}
		a.w.ResetWritten()
		var applied []*mutation
		var retry []*mutation
		for i, m := range pending {
			if err := m.ctx.Err(); err != nil {
				m.err = api.Errorf(api.CodeOf(err), "shard %s: %v before the mutation ran; it was not applied", a.id, err)
				continue
			}
			a.w.ExecSys("SAVEPOINT m")
			res, dirty, err := a.run(m)
			if err != nil {
				m.err = err
				if a.w.C.AutoCommit() {
					retry = append(append(retry, applied...), pending[i+1:]...)
					break
				}
				a.w.ExecSys("ROLLBACK TO m")
				a.w.ExecSys("RELEASE m")
				continue
			}
			a.w.ExecSys("RELEASE m")
			if dirty {
				a.seq++
			}
			res.Seq = a.seq
			res.ShardID = a.id
			m.res = res
			applied = append(applied, m)
		}
		if retry != nil {
			a.seq = startSeq
			for _, m := range retry {
				a.h.budget.Release(m.held)
				m.res, m.err, m.held = nil, nil, 0
			}
			pending = retry
			continue
		}
		err := a.commit(startSeq)
		if err != nil {
			a.w.ExecSys("ROLLBACK")
			a.seq = startSeq
			a.failAll(applied, api.Errorf(codes.Unavailable, "shard %s: commit failed, the mutation was not applied: %v", a.id, err))
		} else {
			// Live queries get the new seq and the tables written once the
			// commit is durable (batch.complete).
			a.noteCommit(startSeq+1, a.seq)
		}
		return
	}
}

func (a *actor) commit(startSeq uint64) error {
	if err := a.alarmsBeforeCommit(); err != nil {
		return fmt.Errorf("write the alarm index: %w", err)
	}
	if err := a.queuesBeforeCommit(); err != nil {
		return fmt.Errorf("write the queue index: %w", err)
	}
	if a.seq != startSeq {
		if _, err := a.w.ExecSys("UPDATE __lunora_meta SET v = ? WHERE k = 'seq'", driver.NamedValue{Ordinal: 1, Value: int64(a.seq)}); err != nil {
			return err
		}
	}
	_, err := a.w.ExecSys("COMMIT")
	return err
}

func (a *actor) failAll(ms []*mutation, err error) {
	for _, m := range ms {
		m.res, m.err = nil, err
		a.h.budget.Release(m.held)
		m.held = 0
	}
}

// run executes one mutation's statements as user SQL. RowsAffected is the
// number of rows the mutation inserted, updated or deleted (triggers
// included); it reports whether any row changed.
func (a *actor) run(m *mutation) (*api.Result, bool, error) {
	if m.op != nil {
		dirty, err := m.op()
		return &api.Result{}, dirty, err
	}
	c := a.w
	ctx, cancel := context.WithTimeout(m.ctx, a.h.cfg.StatementTimeout)
	defer cancel()
	before, err := c.TotalChanges()
	if err != nil {
		return nil, false, c.Classify(err, a.id)
	}
	c.Reset()
	c.Now = a.h.cfg.Now()
	c.Caller = callerOf(m.ctx)
	c.Sched, c.Attempt = &a.sched, m.attempt
	defer func() {
		c.User, c.Now, c.Caller = false, time.Time{}, sqlitex.Caller{}
		c.Sched, c.Attempt = nil, 0
	}()
	res := &api.Result{}
	// Every statement goes through QueryRows: the driver's Exec with a
	// cancellable context starts a goroutine per statement, QueryRows does
	// not. The last statement's rows are the result; earlier ones' rows are
	// bounded like any result and dropped.
	for i, stmt := range m.sql {
		c.User = true
		lim := a.h.limits()
		if i == len(m.sql)-1 {
			lim.Held = &m.held
		}
		cols, rows, err := c.QueryRows(ctx, stmt, m.args, lim)
		if err != nil {
			return nil, false, c.Classify(err, a.id)
		}
		res.Columns, res.Rows = cols, rows
	}
	c.User = false
	after, err := c.TotalChanges()
	if err != nil {
		return nil, false, c.Classify(err, a.id)
	}
	// The alarm and outbox rows the mutation wrote are not its rows, but
	// they are a change of the shard: the commit gets a sequence number.
	res.RowsAffected = after - before - c.NestedChanges()
	return res, c.Dirty() || res.RowsAffected > 0 || c.NestedChanges() > 0, nil
}
