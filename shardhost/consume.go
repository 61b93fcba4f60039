package shardhost

import (
	"context"
	"errors"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
)

// QueueCaller runs a queue's consumer function on the shard its arguments
// name, wherever in the cluster that shard lives (a node passes its own
// request path, which forwards to the holder).
type QueueCaller func(ctx context.Context, shardID, function string, args map[string]any) error

// consumeBatch is how many messages a consumer worker leases at a time.
const consumeBatch = 16

// StartConsumers starts, for every queue declared with a consumer
// function, Config.QueueConsumers workers that receive the queue's
// messages from the shards on this node and run the consumer for each:
// the message is acknowledged when the call succeeds and nacked (retried
// after the queue's back-off, dead-lettered after its last attempt) when
// it fails. The workers stop with Shutdown. Call it once.
func (h *Host) StartConsumers(call QueueCaller) {
	n := h.cfg.QueueConsumers
	if n == 0 {
		n = 4
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	for _, name := range h.cfg.App.QueueNames() {
		q := h.cfg.App.Queue(name)
		if q.Consumer == "" {
			continue
		}
		for range n {
			h.janitor.Add(1)
			go h.consume(q, call)
		}
	}
}

func (h *Host) consume(q *schema.Queue, call QueueCaller) {
	defer h.janitor.Done()
	for {
		msgs, err := h.ReceiveMessages(h.life, q.Name, consumeBatch, 0, 5*time.Second)
		if errors.Is(err, ErrClosed) || h.life.Err() != nil {
			return
		}
		if err != nil {
			h.log.Warn("queue consumer: receive", "queue", q.Name, "err", err)
			select {
			case <-h.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		h.runConsumer(q, call, msgs)
	}
}

// runConsumer runs the consumer for each message in order. Messages of a
// shard are acknowledged together after the last one of the batch has
// run; after one fails, the shard's later messages are handed back
// unattempted (FIFO per shard and queue: none may overtake it).
func (h *Host) runConsumer(q *schema.Queue, call QueueCaller, msgs []api.QueueMessage) {
	acked := map[string][]string{}
	failed := map[string]bool{}
	released := map[string][]string{}
	var order []string
	for _, m := range msgs {
		if _, seen := acked[m.ShardID]; !seen {
			acked[m.ShardID] = nil
			order = append(order, m.ShardID)
		}
		if failed[m.ShardID] {
			released[m.ShardID] = append(released[m.ShardID], m.ID)
			continue
		}
		err := h.callConsumer(q, call, m)
		if err == nil {
			acked[m.ShardID] = append(acked[m.ShardID], m.ID)
			continue
		}
		failed[m.ShardID] = true
		h.log.Info("queue consumer failed; the message will be retried", "queue", q.Name, "message", m.ID, "attempt", m.Attempt, "err", err)
		if _, serr := h.settleOn(h.life, m.ShardID, settleNack, []string{m.ID}, 0, err.Error()); serr != nil {
			h.log.Warn("queue consumer: nack", "queue", q.Name, "message", m.ID, "err", serr)
		}
	}
	for _, shard := range order {
		if _, err := h.settleOn(h.life, shard, settleAck, acked[shard], 0, ""); err != nil {
			h.log.Warn("queue consumer: ack", "queue", q.Name, "shard", shard, "err", err)
		}
		if _, err := h.settleOn(h.life, shard, settleRelease, released[shard], 0, ""); err != nil {
			h.log.Warn("queue consumer: hand back", "queue", q.Name, "shard", shard, "err", err)
		}
	}
}

func (h *Host) callConsumer(q *schema.Queue, call QueueCaller, m api.QueueMessage) error {
	shardID, args, err := h.consumerCall(q, m.Body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(h.life, q.VisibilityTimeout)
	defer cancel()
	return call(ctx, shardID, q.Consumer, args)
}
