package handoff

import (
	"context"
	"io"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// Receive stores a shard streamed by its holder h.From: durable and
// verified when it returns (the ack), not served until Done or until the
// registry names this node its holder. The caller has checked that this
// node owns the shard at h.Epoch.
//
// The registry, read through the log, must name h.From as the holder: a
// sender whose own replica lags may still think it holds a shard that
// has moved on, and its copy is then stale. Stored here, that copy would
// be installed over the live one the moment the registry names this node
// (InstallCommitted), losing every write acknowledged since. Only the
// holder can commit a move of the shard, and it is frozen while it sends,
// so the answer stays true until its commit.
func (m *Mover) Receive(ctx context.Context, h api.HandoffHeader, r io.Reader, sum []byte) error {
	if h.From == m.cfg.NodeID {
		return api.Errorf(codes.FailedPrecondition, "shard %s: node %s cannot hand a shard off to itself", h.ShardID, h.From)
	}
	holder, _, err := m.commit(ctx, h.ShardID, m.cfg.NodeID, m.cfg.NodeID, 0)
	if api.CodeOf(err) == codes.NotFound {
		return api.Errorf(codes.FailedPrecondition, "shard %s is not in the registry: no node holds it, so none can hand it off", h.ShardID)
	}
	if err != nil {
		return err
	}
	if holder != h.From {
		return api.Errorf(codes.FailedPrecondition, "shard %s: the registry names %q as its holder, not the sender %q: the sender's copy is stale", h.ShardID, holder, h.From)
	}
	r, done := m.track(h.ShardID, h.From, m.cfg.NodeID, h.Size, r)
	defer done()
	if err := m.cfg.Files.Receive(ctx, h.ShardID, r, h.Size, sum); err != nil {
		return err
	}
	m.fault(FaultRecvAfterStore, h.ShardID)
	return nil
}

// Done installs a received shard once this node's replica has applied the
// move's commit at index and its registry names this node the holder.
// Index 0 is the sender's abort: its commit did not take effect (the
// registry still names the sender, which is frozen until it has this
// answer, so no other stream of the shard can be on its way), and the
// copy goes rather than wait, unserved, for this node's next start.
func (m *Mover) Done(ctx context.Context, shardID string, index uint64) error {
	if index == 0 {
		if err := ctx.Err(); err != nil {
			return err // the sender has given up on this answer and may send again
		}
		if holder, _, err := m.cfg.Registry.ShardHolder(ctx, shardID); err == nil && holder == m.cfg.NodeID {
			return api.Errorf(codes.FailedPrecondition, "shard %s: the registry names this node its holder; an abort cannot discard it", shardID)
		}
		if err := m.cfg.Files.ResolveMove(shardID, shardhost.MoveRecv, ""); err != nil {
			return err
		}
		m.log.Debug("discarded a received copy: its move did not commit", "shard", shardID)
		return nil
	}
	if err := m.cfg.Registry.WaitApplied(ctx, index); err != nil {
		return err
	}
	holder, _, err := m.cfg.Registry.ShardHolder(ctx, shardID)
	if err != nil {
		return err
	}
	if holder != m.cfg.NodeID {
		return api.Errorf(codes.FailedPrecondition, "shard %s: the registry names %q as its holder at index %d, not this node", shardID, holder, index)
	}
	return m.cfg.Files.Install(shardID)
}

// InstallCommitted installs each received copy that the registry names
// this node the holder of. A sender that crashed after its commit never
// sends Done, and nothing else may ever activate the shard here — its
// alarms would not fire and its queues' messages would not be delivered
// until a request came. A copy the registry does not name this node for
// is left alone: its sender may still commit it, or abort. This node's
// replica answers first (no cost while nothing is to install); a replica
// naming this node is confirmed through the log, since it may lag: a
// shard this node moved away a moment ago, now on its way back, would
// still name it. The node calls it every second.
func (m *Mover) InstallCommitted(ctx context.Context) {
	self := m.cfg.NodeID
	for _, id := range m.cfg.Files.ReceivedCopies() {
		holder, _, err := m.cfg.Registry.ShardHolder(ctx, id)
		if err != nil || holder != self {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		holder, _, err = m.commit(cctx, id, self, self, 0)
		cancel()
		if err != nil || holder != self {
			continue
		}
		if err := m.cfg.Files.Install(id); err != nil {
			m.log.Debug("install a received copy whose move committed", "shard", id, "err", err)
			continue
		}
		m.log.Info("installed a received copy whose move committed, without word from its sender", "shard", id)
	}
}
