package raftglobal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Read runs cmd's statements in one read transaction on a read-only
// connection of this node's FSM (the sandbox on), at the consistency asked
// for. Result.Seq is the applied index the read saw. The options are the
// API's own (api.ReadOptions, the one type for them): api.Strong reads are
// linearizable (served by the leader after it confirms its leadership with
// a quorum and has applied everything committed when the read arrived: a
// read index, no log write); api.Bookmark reads are served by any replica
// once it has applied opts.Bookmark (a Write's Result.Seq); api.Stale
// reads are served at once from the local replica, refused if it has not
// heard from the leader within opts.MaxStaleness (when set). The default
// consistency is Strong, or Bookmark when a bookmark is given.
// opts.Forwarded is the node API's and is ignored here.
func (s *Store) Read(ctx context.Context, opts api.ReadOptions, cmd Command) (*api.Result, error) {
	if opts.Consistency == api.ConsistencyDefault {
		opts.Consistency = api.Strong
		if opts.Bookmark > 0 {
			opts.Consistency = api.Bookmark
		}
	}
	if opts.Consistency == api.Bookmark && opts.Bookmark == 0 {
		return nil, api.Errorf(codes.InvalidArgument, "a bookmark read needs the bookmark a write returned")
	}
	w, err := toWire(cmd, false, s.cfg.MaxSQLLen)
	if err != nil {
		return nil, err
	}
	if err := s.ready(ctx, opts); err != nil {
		return nil, err
	}
	return s.fsm.read(ctx, &w)
}

// ready waits until this node may serve a read at opts' consistency.
func (s *Store) ready(ctx context.Context, opts api.ReadOptions) error {
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.MaxReadWait)
	defer cancel()
	switch opts.Consistency {
	case api.Strong:
		return s.readIndex(wctx)
	case api.Bookmark:
		return s.awaitBookmark(ctx, wctx, opts.Bookmark)
	case api.Stale:
		if opts.MaxStaleness > 0 && s.raft.State() != raft.Leader {
			last := s.raft.LastContact()
			if last.IsZero() || time.Since(last) > opts.MaxStaleness {
				age := "never"
				if !last.IsZero() {
					age = time.Since(last).Round(time.Millisecond).String() + " ago"
				}
				return api.Wrap(ErrTooStale, fmt.Sprintf("last contact with the leader: %s, bound %v; read on another node or with bookmark/strong consistency", age, opts.MaxStaleness))
			}
		}
		return nil
	}
	return api.Errorf(codes.InvalidArgument, "unknown read consistency %d", opts.Consistency)
}

// readIndex is the leader's linearizable read without a log write: note
// the commit index, confirm leadership with a quorum of heartbeats, and
// wait until the FSM has applied that index.
func (s *Store) readIndex(ctx context.Context) error {
	if err := s.leaderReady(ctx); err != nil {
		return err
	}
	idx := s.raft.CommitIndex()
	if err := waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		if ctx.Err() != nil {
			return api.Errorf(codes.Unavailable, "global tier: leadership not confirmed by a quorum in time: %v", ctx.Err())
		}
		return s.raftError(err)
	}
	if err := s.fsm.waitApplied(ctx, idx); err != nil {
		return api.Errorf(codes.Unavailable, "global tier: leader at index %d has not applied the read index %d in time", s.fsm.applied.Load(), idx)
	}
	return nil
}

// awaitBookmark waits (bounded by wctx) until this replica has applied
// index b. A bookmark beyond every index this node can know of fails fast:
// at once on the leader, after FutureBookmarkGrace on a follower that is in
// touch with the leader but whose log does not reach it.
func (s *Store) awaitBookmark(ctx, wctx context.Context, b uint64) error {
	if s.fsm.applied.Load() >= b {
		return nil
	}
	if s.raft.State() == raft.Leader && b > s.raft.LastIndex() {
		return s.futureBookmark(b)
	}
	grace := time.Now().Add(s.cfg.FutureBookmarkGrace)
	for {
		ch := s.fsm.appliedWait()
		applied := s.fsm.applied.Load()
		if applied >= b {
			return nil
		}
		if last := s.raft.LastIndex(); b > last {
			switch {
			case s.raft.State() == raft.Leader:
				return s.futureBookmark(b)
			case time.Now().After(grace) && time.Since(s.raft.LastContact()) < s.cfg.FutureBookmarkGrace:
				return s.futureBookmark(b)
			}
		}
		select {
		case <-ch:
		case <-time.After(pollInterval):
		case <-s.closed:
			return ErrClosed
		case <-wctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return api.Errorf(codes.Canceled, "request canceled")
			}
			return api.Wrap(ErrBookmarkNotApplied, fmt.Sprintf("replica %s is at index %d, bookmark %d not yet applied; retry or read with strong consistency", s.cfg.NodeID, applied, b))
		}
	}
}

func (s *Store) futureBookmark(b uint64) error {
	return api.Wrap(ErrFutureBookmark, fmt.Sprintf("bookmark %d is beyond the last index this node has from the leader (%d): it was not issued by this cluster's global tier", b, s.raft.LastIndex()))
}
