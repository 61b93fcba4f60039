package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc/codes"
)

// Queues and the alarm listings (ARCHITECTURE.md §8). A queue's messages
// live in the outboxes of the shards that enqueued them, spread over every
// node: receiving, listing dead letters, redriving and reading the alarm
// index ask every node; settling messages and listing a shard's alarms go
// to the shard's owner, like a call.

// queueNode is a node asked by a fan-out.
type queueNode struct{ id, addr string }

// queueNodes are the nodes a fan-out asks: the ring's, and the recorded
// members still up outside it (a node drained out of the ring may still
// hold shards), less those gossip reports gone.
func (r *Router) queueNodes(ctx context.Context) ([]queueNode, error) {
	v := r.view.Load()
	if v.ring == nil {
		if _, err := r.Refresh(ctx, 1); err != nil {
			return nil, api.Errorf(codes.Unavailable, "no ring yet (no node hosts shards): %v", err)
		}
		v = r.view.Load()
	}
	if v.info == nil {
		return nil, api.New(codes.Unavailable, "no ring yet: no node hosts shards")
	}
	seen := map[string]bool{}
	var out []queueNode
	add := func(n api.RingNode) {
		if seen[n.ID] || n.GRPCAddr == "" {
			return
		}
		seen[n.ID] = true
		if r.dead(n.ID) {
			r.log.Debug("queues: skipping a node gossip reports gone", "node", n.ID)
			return
		}
		out = append(out, queueNode{n.ID, n.GRPCAddr})
	}
	for _, n := range v.info.Nodes {
		add(n)
	}
	for _, n := range v.info.Members {
		if n.State == "up" {
			add(n)
		}
	}
	if len(out) == 0 {
		return nil, api.New(codes.Unavailable, "no node is reachable")
	}
	return out, nil
}

// eachNode calls do on every node in parallel and answers each node's
// error (nil for those that answered).
func (r *Router) eachNode(ctx context.Context, nodes []queueNode, do func(ctx context.Context, i int, c *rpc.NodeClient) error) []error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := r.client(n.addr)
			if err == nil {
				err = do(ctx, i, c)
			}
			if err != nil {
				errs[i] = fmt.Errorf("node %s (%s): %w", n.id, n.addr, err)
			}
		}()
	}
	wg.Wait()
	return errs
}

// allFailed answers nil when some node answered, else the first node's
// error (every node failing the same way, say NOT_FOUND for an unknown
// queue, is the answer), keeping its code.
func allFailed(errs []error) error {
	for _, err := range errs {
		if err == nil {
			return nil
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return coded(errs[0])
}

// anyFailed answers the first node's error, or nil when every node
// answered.
func anyFailed(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return coded(err)
		}
	}
	return nil
}

// coded keeps the node's code on an error wrapped with the node's name.
func coded(err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return &api.Error{Code: ae.Code, Msg: err.Error(), Reason: ae.Reason, Meta: ae.Meta, RetryAfter: ae.RetryAfter, Err: err}
	}
	return err
}

// maxReceiveRounds bounds the rounds of one ReceiveMessages.
const maxReceiveRounds = 4

// ReceiveMessages leases up to max ready messages of queue from every
// node, never more than max in all: each node is asked for a share of
// max (all in parallel, waiting up to wait), then the nodes that filled
// their share are asked again, without waiting, for what is still
// missing. With fewer messages wanted than nodes, which nodes get a share
// rotates from call to call. A node that fails is left out of the round
// (logged); the call fails only when every node does.
func (r *Router) ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error) {
	if max <= 0 {
		return nil, api.Errorf(codes.InvalidArgument, "max must be positive, got %d", max)
	}
	nodes, err := r.queueNodes(ctx)
	if err != nil {
		return nil, err
	}
	if len(nodes) > 1 {
		k := int(r.rr.Add(1) % uint64(len(nodes)))
		nodes = append(nodes[k:], nodes[:k]...)
	}
	var out []api.QueueMessage
	for round := 0; round < maxReceiveRounds && len(out) < max && len(nodes) > 0; round++ {
		shares := split(max-len(out), len(nodes))
		got := make([][]api.QueueMessage, len(nodes))
		errs := r.eachNode(ctx, nodes, func(ctx context.Context, i int, c *rpc.NodeClient) (err error) {
			if shares[i] == 0 {
				return nil
			}
			got[i], err = c.ReceiveMessages(ctx, queue, shares[i], visibility, wait)
			return err
		})
		if round == 0 {
			if err := allFailed(errs); err != nil {
				return nil, err
			}
		}
		var full []queueNode
		for i, n := range nodes {
			if errs[i] != nil {
				r.log.Warn("queue receive: a node failed; left out of this round", "queue", queue, "err", errs[i])
				continue
			}
			// A node answering more than asked is trimmed: its extra
			// leases end with their visibility timeout.
			msgs := got[i][:min(len(got[i]), shares[i])]
			out = append(out, msgs...)
			if shares[i] > 0 && len(msgs) == shares[i] {
				full = append(full, n)
			}
		}
		nodes, wait = full, 0
	}
	return out, nil
}

// split divides n into k shares that differ by at most one, the larger
// first.
func split(n, k int) []int {
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
		if i < n%k {
			out[i]++
		}
	}
	return out
}

// SettleMessages acks, nacks or extends messages of one shard on the node
// that owns it. An ack or an extend is sent again where a call would be;
// a nack (which may count an attempt) only when it never left.
func (r *Router) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	var n int
	err := r.do(ctx, shardID, how != api.Nack, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		n, err = c.SettleMessages(ctx, shardID, how, ids, delay)
		return err
	})
	return n, err
}

// DeadMessages lists the dead-letter messages of queue ("": every queue)
// on every node, oldest first, up to limit. A node that fails fails the
// listing (naming it): a list that silently left out a node's dead letters
// would mislead.
func (r *Router) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	nodes, err := r.queueNodes(ctx)
	if err != nil {
		return nil, err
	}
	got := make([][]api.QueueMessage, len(nodes))
	errs := r.eachNode(ctx, nodes, func(ctx context.Context, i int, c *rpc.NodeClient) (err error) {
		got[i], err = c.DeadMessages(ctx, queue, limit)
		return err
	})
	if err := anyFailed(errs); err != nil {
		return nil, err
	}
	out := slices.Concat(got...)
	slices.SortFunc(out, func(a, b api.QueueMessage) int {
		return cmp.Or(a.Died.Compare(b.Died), cmp.Compare(a.ShardID, b.ShardID), cmp.Compare(a.ID, b.ID))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Redrive puts the dead-letter messages of queue (ids empty: all of them)
// back on the queue on every node and answers how many. When a node
// fails, the answer is its error, saying how many the others redrove
// (running it again is harmless).
func (r *Router) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	nodes, err := r.queueNodes(ctx)
	if err != nil {
		return 0, err
	}
	counts := make([]int, len(nodes))
	errs := r.eachNode(ctx, nodes, func(ctx context.Context, i int, c *rpc.NodeClient) (err error) {
		counts[i], err = c.Redrive(ctx, queue, ids)
		return err
	})
	total := 0
	for _, n := range counts {
		total += n
	}
	if err := anyFailed(errs); err != nil {
		if total == 0 {
			return 0, err
		}
		var ae *api.Error
		errors.As(err, &ae)
		return total, &api.Error{Code: ae.Code, Msg: fmt.Sprintf("%s (the other nodes redrove %d messages; redrive again once it answers)", err.Error(), total), Err: err}
	}
	return total, nil
}

// Alarms lists one shard's alarms from the node that owns it.
func (r *Router) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	var out []api.Alarm
	err := r.do(ctx, shardID, true, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		out, err = c.Alarms(ctx, shardID, limit)
		return err
	})
	return out, err
}

// AlarmsDue merges every node's alarm index by due time, up to limit. A
// node that fails fails the listing, naming it.
func (r *Router) AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error) {
	nodes, err := r.queueNodes(ctx)
	if err != nil {
		return nil, err
	}
	got := make([][]api.AlarmDue, len(nodes))
	errs := r.eachNode(ctx, nodes, func(ctx context.Context, i int, c *rpc.NodeClient) (err error) {
		got[i], err = c.AlarmsDue(ctx, limit)
		return err
	})
	if err := anyFailed(errs); err != nil {
		return nil, err
	}
	out := slices.Concat(got...)
	slices.SortFunc(out, func(a, b api.AlarmDue) int {
		return cmp.Or(a.Due.Compare(b.Due), cmp.Compare(a.ShardID, b.ShardID))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

var _ rpc.Queues = (*Router)(nil)
