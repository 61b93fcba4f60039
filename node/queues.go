package node

import (
	"context"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// QueueShards is the shard runtime's side of queues and of the alarm
// listings (ARCHITECTURE.md §8): *shardhost.Host. Its methods are safe for
// concurrent use and honour ctx; an unknown queue is NOT_FOUND.
// SettleMessages and Alarms answer shardhost.ErrShardElsewhere for a shard
// another node holds, as Call does.
type QueueShards interface {
	// ReceiveMessages leases up to max ready messages of queue on the
	// shards held here (FIFO per shard and queue), waiting up to wait for
	// one; each lease lasts visibility (0: the queue's).
	ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error)
	SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error)
	DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error)
	Redrive(ctx context.Context, queue string, ids []string) (int, error)
	Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error)
	// AlarmsDue lists this node's alarm index by due time; it does not
	// block.
	AlarmsDue(limit int) []api.AlarmDue
}

// A queue's messages live in the outboxes of the shards whose mutations
// enqueued them, so receiving, listing dead letters and redriving are
// answered by every node for the shards it holds (a gateway asks them
// all), while settling a message and listing a shard's alarms go to the
// shard, like a call: the shard's owner serves them, pulling the shard
// from its holder first if need be (onShard).

// ReceiveMessages leases ready messages of queue on the shards this node
// holds.
func (n *Node) ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error) {
	return n.cfg.Shards.ReceiveMessages(ctx, queue, max, visibility, wait)
}

// SettleMessages acks, nacks or extends messages of a shard this node owns.
func (n *Node) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	if err := notGlobal(shardID, "queue messages"); err != nil {
		return 0, err
	}
	var settled int
	err := n.onShard(ctx, shardID, func() (err error) {
		settled, err = n.cfg.Shards.SettleMessages(ctx, shardID, how, ids, delay)
		return err
	})
	return settled, err
}

// DeadMessages lists dead-letter messages on the shards this node holds.
func (n *Node) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	return n.cfg.Shards.DeadMessages(ctx, queue, limit)
}

// Redrive puts dead-letter messages on the shards this node holds back on
// their queue.
func (n *Node) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	return n.cfg.Shards.Redrive(ctx, queue, ids)
}

// Alarms lists the alarms of a shard this node owns.
func (n *Node) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	if err := notGlobal(shardID, "alarms"); err != nil {
		return nil, err
	}
	var alarms []api.Alarm
	err := n.onShard(ctx, shardID, func() (err error) {
		alarms, err = n.cfg.Shards.Alarms(ctx, shardID, limit)
		return err
	})
	return alarms, err
}

// AlarmsDue lists this node's alarm index.
func (n *Node) AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.cfg.Shards.AlarmsDue(limit), nil
}

func notGlobal(shardID, what string) error {
	if shardID == schema.GlobalGroup {
		return api.Errorf(codes.InvalidArgument, "the global tier has no %s: name a shard", what)
	}
	return nil
}
