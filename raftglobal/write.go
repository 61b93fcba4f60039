package raftglobal

import (
	"context"
	"fmt"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// pendingWrite is one command waiting for the batcher, and then for the
// entry that holds it to be committed and applied.
type pendingWrite struct {
	ctx  context.Context
	cmd  wireCommand
	res  *api.Result
	err  error
	done chan struct{}
}

// Write runs cmd's statements in one SAVEPOINT on every replica, through the
// log (leader only: elsewhere a *NotLeaderError names the leader). The
// result is that of the last statement; its Seq is the bookmark, the log
// index of the entry that holds the write. A statement that reads the clock
// is refused before it enters the log (CheckDeterministic). Without a leader
// the error is UNAVAILABLE once ctx or ApplyTimeout runs out.
func (s *Store) Write(ctx context.Context, cmd Command) (*api.Result, error) {
	for _, sql := range cmd.SQL {
		if err := CheckDeterministic(sql); err != nil {
			return nil, err
		}
		if err := CheckArgsDeterministic(sql, cmd.Args); err != nil {
			return nil, err
		}
	}
	w, err := toWire(cmd, false, s.cfg.MaxSQLLen)
	if err != nil {
		return nil, err
	}
	return s.propose(ctx, w)
}

// propose sends one command through the log and returns its result.
func (s *Store) propose(ctx context.Context, w wireCommand) (*api.Result, error) {
	start := time.Now()
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	if err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	if !w.Sys {
		if err := s.fsm.precheck(ctx, w.SQL); err != nil {
			return nil, err
		}
	}
	p := &pendingWrite{ctx: ctx, cmd: w, done: make(chan struct{})}
	if s.cfg.Batching {
		select {
		case s.pending <- p:
		case <-s.closed:
			return nil, ErrClosed
		default:
			return nil, api.Wrap(ErrBusy, fmt.Sprintf("%d writes queued", cap(s.pending)))
		}
	} else {
		go s.commit([]*pendingWrite{p})
	}
	select {
	case <-p.done:
		s.m.writeLatency.Observe(time.Since(start).Seconds())
		return p.res, p.err
	case <-ctx.Done():
		return nil, s.raftError(ctx.Err())
	}
}

// runBatcher is the leader's group commit: it takes every queued write (up
// to MaxBatch) into one Raft entry, stamped with the leader's clock, and
// hands the entry to Raft without waiting for it, up to maxInflightEntries
// entries at a time. Writes that arrive while entries are in flight form
// the next batch.
func (s *Store) runBatcher() {
	defer s.wg.Done()
	batch := make([]*pendingWrite, 0, s.cfg.MaxBatch)
	for {
		select {
		case <-s.closed:
			return
		case p := <-s.pending:
			batch = append(batch[:0], p)
		}
		select {
		case s.inflight <- struct{}{}:
		case <-s.closed:
			s.fail(batch, ErrClosed)
			return
		}
	drain:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case p := <-s.pending:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		s.wg.Add(1)
		go func(batch []*pendingWrite) {
			defer s.wg.Done()
			defer func() { <-s.inflight }()
			s.commit(batch)
		}(append([]*pendingWrite(nil), batch...))
	}
}

// commit writes one entry holding the batch's commands and hands each
// command its own result.
func (s *Store) commit(batch []*pendingWrite) {
	live := batch[:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = api.Errorf(api.CodeOf(err), "global tier: %v before the write entered the log; it was not applied", err)
			close(p.done)
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	e := &entry{Time: s.cfg.now().UnixNano(), Cmds: make([]wireCommand, len(live))}
	for i, p := range live {
		e.Cmds[i] = p.cmd
	}
	data, err := encodeEntry(e)
	if err != nil {
		s.fail(live, api.Errorf(codes.InvalidArgument, "global tier: encode write: %v", err))
		return
	}
	s.m.batchSize.Observe(float64(len(live)))
	f := s.raft.Apply(data, s.cfg.ApplyTimeout)
	if err := s.await(f); err != nil {
		s.fail(live, s.raftError(err))
		return
	}
	out, _ := f.Response().(*entryResult)
	switch {
	case out == nil:
		s.fail(live, api.Errorf(codes.Internal, "global tier: entry %d applied without a result", f.Index()))
		return
	case out.err != nil:
		s.fail(live, out.err)
		return
	}
	for i, p := range live {
		if i < len(out.cmds) {
			p.res, p.err = out.cmds[i].res, out.cmds[i].err
		} else {
			p.err = api.Errorf(codes.Internal, "global tier: entry %d has no result for command %d", f.Index(), i)
		}
		close(p.done)
	}
}

func (s *Store) fail(batch []*pendingWrite, err error) {
	for _, p := range batch {
		p.res, p.err = nil, err
		close(p.done)
	}
}

// failPending answers the writes still queued when the store closes.
func (s *Store) failPending() {
	for {
		select {
		case p := <-s.pending:
			s.fail([]*pendingWrite{p}, ErrClosed)
		default:
			return
		}
	}
}
