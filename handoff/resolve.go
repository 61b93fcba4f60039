package handoff

import (
	"context"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// ResolvePending settles the handoffs a crash interrupted (the Files'
// journal entries), asking the registry (through the log) who holds each
// shard, until every entry is settled or ctx ends. Run it once at start,
// in its own goroutine.
func (m *Mover) ResolvePending(ctx context.Context) {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		left := 0
		for _, pm := range m.cfg.Files.PendingMoves() {
			if pm.Role == shardhost.MoveRecv {
				// A received copy is discarded if the registry names
				// another holder — but a sender cut off since the stream
				// may still be about to commit the move to this node.
				// Once this process's incarnation is recorded, no move
				// fenced to an earlier process can commit (MoveShard), so
				// the registry read below is final.
				if ok, err := m.cfg.Registry.Recorded(ctx); err != nil || !ok {
					left++
					m.log.Debug("interrupted handoff: waiting for this process's incarnation to be recorded", "shard", pm.ShardID, "err", err)
					continue
				}
			}
			holder, _, err := m.commit(ctx, pm.ShardID, m.cfg.NodeID, m.cfg.NodeID, 0)
			if api.CodeOf(err) == codes.NotFound {
				holder, err = "", nil
			}
			if err == nil {
				err = m.cfg.Files.ResolveMove(pm.ShardID, pm.Role, holder)
			}
			if err != nil {
				left++
				m.log.Warn("resolve an interrupted handoff", "shard", pm.ShardID, "role", pm.Role, "err", err)
				continue
			}
			m.log.Info("resolved an interrupted handoff", "shard", pm.ShardID, "role", pm.Role, "holder", holder)
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// Holder returns the shard's holder in the registry, given the holder a
// request was answered with (named, a forward pointer this node's Files
// keep): when this replica of the registry names the same node it is the
// answer; otherwise (a stale forward pointer, or a replica that has not
// applied the latest move) the holder is read through the log, and the
// pointer is corrected to it. A shard that is not registered has nothing
// to pull: the answer is this node.
func (m *Mover) Holder(ctx context.Context, shardID, named string) (string, error) {
	if h, exists, err := m.cfg.Registry.ShardHolder(ctx, shardID); err == nil && exists && h == named {
		return named, nil
	}
	self := m.cfg.NodeID
	holder, _, err := m.commit(ctx, shardID, self, self, 0)
	if api.CodeOf(err) == codes.NotFound {
		holder, err = "", nil
	}
	if err != nil {
		return "", err
	}
	if holder != named {
		m.log.Info("forward pointer corrected from the registry", "shard", shardID, "pointer", named, "holder", holder)
		m.cfg.Files.Redirect(shardID, holder)
	}
	if holder == "" {
		return self, nil // not registered: nothing to pull
	}
	return holder, nil
}
