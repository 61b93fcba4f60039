package handoff

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// Move hands a shard this node holds to node to (its node-API address
// addr), which owns it at ring epoch epoch: freeze, stream, commit in the
// registry, drop (or thaw when the move did not commit). It returns the
// log index of the commit (0 when the shard was there already). At most
// MaxMoves run at once; the others wait for a slot (bounded by ctx).
func (m *Mover) Move(ctx context.Context, shardID, to, addr string, epoch uint64) (uint64, error) {
	select {
	case m.moves <- struct{}{}:
		defer func() { <-m.moves }()
	case <-ctx.Done():
		return 0, api.Wrap(shardhost.ErrShardMoving, "shard "+shardID+": waiting for a move slot: "+ctx.Err().Error())
	}
	self := m.cfg.NodeID
	holder, exists, err := m.cfg.Registry.ShardHolder(ctx, shardID)
	if err != nil {
		return 0, err
	}
	if exists && holder == to {
		return 0, nil // moved already (by rebalancing, say)
	}
	if !exists || holder != self {
		return 0, shardhost.Elsewhere(shardID, holder)
	}
	if addr == "" {
		return 0, api.Errorf(codes.Unavailable, "node %s has no recorded address", to)
	}
	p, err := m.cfg.Peers.Peer(addr)
	if err != nil {
		return 0, err
	}
	// The commit is fenced to the receiver's process as this replica
	// knows it: one that restarts after taking the stream (and may then
	// discard the copy; ResolvePending) is never named the holder. A
	// replica behind the receiver's newest start makes the commit refuse
	// a move that was safe; the move is retried.
	toInc, err := m.cfg.Registry.Incarnation(ctx, to)
	if err != nil {
		return 0, err
	}
	f, err := m.cfg.Files.Freeze(ctx, shardID)
	if shardhost.HolderOf(err) == to {
		return 0, nil // it moved there while we looked
	}
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := m.send(ctx, p, f, to, epoch); err != nil {
		if api.CodeOf(err) == codes.FailedPrecondition {
			// The receiver refused the copy; it may have found it stale
			// (the registry names another holder). Such a copy is never
			// served again.
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			holder, _, herr := m.commit(cctx, shardID, self, self, 0)
			cancel()
			if herr == nil && movedOn(holder, self) {
				m.drop(f, holder)
				return 0, api.Errorf(codes.Aborted, "shard %s: the registry names %q as its holder, not this node: the copy here was stale and is dropped", shardID, holder)
			}
		}
		m.thaw(f)
		return 0, fmt.Errorf("hand off shard %s to %s: %w", shardID, to, err)
	}
	m.fault(FaultSendAfterAck, shardID)
	holder, idx, err := m.commit(ctx, shardID, self, to, toInc)
	if err != nil {
		// The outcome is unknown: the shard stays frozen until the
		// registry says who holds it.
		m.settling.Add(1)
		go func() {
			defer m.settling.Done()
			m.settle(p, f, to)
		}()
		return 0, err
	}
	if holder != to {
		m.abort(p, shardID, to)
		if movedOn(holder, self) {
			// Not this move's doing: an earlier move of this copy
			// committed, so it was stale. It is never served again.
			m.drop(f, holder)
			return 0, api.Errorf(codes.Aborted, "shard %s: the registry names %q as its holder, not this node: the copy here was stale and is dropped", shardID, holder)
		}
		m.thaw(f)
		return 0, api.Errorf(codes.Aborted, "shard %s: the registry names %q as its holder; the move did not commit", shardID, holder)
	}
	m.fault(FaultSendAfterCommit, shardID)
	m.drop(f, to)
	if err := p.HandoffDone(ctx, shardID, idx); err != nil {
		// The new holder installs its copy on first access or restart.
		m.log.Warn("moved shard: tell the new holder", "shard", shardID, "to", to, "err", err)
	}
	m.log.Debug("moved shard", "shard", shardID, "to", to, "bytes", f.Size, "took", time.Since(start))
	return idx, nil
}

// abort tells the receiver of a move that did not commit to discard its
// copy (HandoffDone with index 0), before the shard is thawed and may be
// sent again. Best effort: a receiver that does not hear it keeps the
// copy, never served, until its next start resolves it.
func (m *Mover) abort(p Peer, shardID, to string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.HandoffDone(ctx, shardID, 0); err != nil {
		m.log.Debug("abort a move: tell the receiver", "shard", shardID, "to", to, "err", err)
	}
}

// movedOn reports whether the registry's answer names a holder other
// than self: the shard left this node (a holder of "" is a registration
// older than holders, which says nothing).
func movedOn(holder, self string) bool { return holder != "" && holder != self }

func (m *Mover) drop(f *shardhost.Frozen, holder string) {
	if err := m.cfg.Files.Drop(f, holder); err != nil {
		m.log.Error("moved shard: delete the old copy", "shard", f.ShardID, "err", err)
	}
}

func (m *Mover) thaw(f *shardhost.Frozen) {
	if err := m.cfg.Files.Thaw(f); err != nil {
		m.log.Error("thaw shard after a failed move", "shard", f.ShardID, "err", err)
	}
}

// WaitSettled waits, bounded by ctx, until every move whose commit outcome
// was unknown has been settled — its local copy dropped or thawed. A node
// that leaves waits for them: the registry may already name the receiver
// while the old copy is still here, and a process stopped then would keep
// it.
func (m *Mover) WaitSettled(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		m.settling.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("moves still settling their commit: %w", ctx.Err())
	}
}

// settle resolves a move whose commit outcome is unknown: it asks the
// registry (through the log) until it answers, then drops or thaws.
func (m *Mover) settle(p Peer, f *shardhost.Frozen, to string) {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		holder, _, err := m.commit(ctx, f.ShardID, m.cfg.NodeID, m.cfg.NodeID, 0)
		cancel()
		if err == nil {
			switch {
			case holder == to:
				m.drop(f, to)
			case movedOn(holder, m.cfg.NodeID):
				// The move committed and the shard has moved on since:
				// while it was frozen here no one else could move it away.
				m.drop(f, holder)
			default:
				m.abort(p, f.ShardID, to)
				m.thaw(f)
			}
			return
		}
		time.Sleep(backoff)
	}
}

// send streams a frozen shard to its new holder at the configured rate,
// bounded in time (a receiver that stops answering must not keep the
// shard frozen): a minute, plus the stream's time at 1 MiB/s or at the
// configured rate if lower.
func (m *Mover) send(ctx context.Context, p Peer, f *shardhost.Frozen, to string, epoch uint64) error {
	rate := float64(1 << 20)
	if l := m.limiter; l != nil {
		rate = min(rate, l.perSec)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(float64(f.Size)/rate*float64(time.Second)))
	defer cancel()
	file, err := f.Open()
	if err != nil {
		return err
	}
	defer file.Close()
	var r io.Reader = file
	if l := m.limiter; l != nil {
		r = &limitedReader{ctx: ctx, r: file, l: l}
	}
	r, done := m.track(f.ShardID, m.cfg.NodeID, to, f.Size, r)
	defer done()
	return p.Handoff(ctx, api.HandoffHeader{ShardID: f.ShardID, From: m.cfg.NodeID, Epoch: epoch, Size: f.Size}, r, f.SHA256[:])
}

// commit changes the registry's holder of a shard through the leader,
// retrying while the global tier has no leader (bounded by ctx). from ==
// to reads the holder through the log without changing it.
func (m *Mover) commit(ctx context.Context, shardID, from, to string, toInc uint64) (string, uint64, error) {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		holder, idx, err := m.cfg.Registry.MoveShard(ctx, shardID, from, to, toInc)
		if err == nil || api.CodeOf(err) != codes.Unavailable {
			return holder, idx, err
		}
		select {
		case <-ctx.Done():
			return "", 0, err
		case <-time.After(backoff):
		}
	}
}
