package rpc_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// queueShards is fakeShards with queues: it records what it was asked
// and answers fixed messages and alarms.
type queueShards struct {
	fakeShards
	asked []any
}

var (
	t0      = time.UnixMilli(1700000000123)
	fixedQM = api.QueueMessage{ID: "msg_1", Queue: "jobs", ShardID: "k=a", Body: `{"n":1}`, Attempt: 3, Enqueued: t0,
		VisibleUntil: t0.Add(time.Minute), Receipt: api.ReceiptOf("k=a", "msg_1"), Error: "boom", Died: t0.Add(time.Hour)}
	fixedAlarm = api.Alarm{ID: "alm_1", ShardID: "k=a", Function: "f", Args: `{"x":1}`, Due: t0, Attempts: 2, Created: t0.Add(-time.Hour),
		Dead: true, Error: "failed", Died: t0.Add(time.Second)}
)

func (q *queueShards) ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error) {
	q.asked = append(q.asked, []any{"receive", queue, max, visibility, wait})
	return []api.QueueMessage{fixedQM}, nil
}

func (q *queueShards) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	q.asked = append(q.asked, []any{"settle", shardID, how, ids, delay, api.RingEpochOf(ctx)})
	return len(ids), nil
}

func (q *queueShards) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	q.asked = append(q.asked, []any{"dead", queue, limit})
	return nil, api.Errorf(codes.NotFound, "unknown queue %q", queue)
}

func (q *queueShards) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	q.asked = append(q.asked, []any{"redrive", queue, ids})
	return 4, nil
}

func (q *queueShards) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	q.asked = append(q.asked, []any{"alarms", shardID, limit, api.RingEpochOf(ctx)})
	return []api.Alarm{fixedAlarm}, nil
}

func (q *queueShards) AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error) {
	q.asked = append(q.asked, []any{"due", limit})
	return []api.AlarmDue{{ShardID: "k=a", Node: "n1", Due: t0}}, nil
}

// TestNodeQueueRoundTrip: the queue and alarm methods cross the node API
// with their arguments, times (to the millisecond), verbs, ring epoch and
// error codes intact; a node without queues answers UNIMPLEMENTED.
func TestNodeQueueRoundTrip(t *testing.T) {
	q := &queueShards{}
	c := startNode(t, q)
	ctx := api.WithRingEpoch(testCtx(t), 7)

	msgs, err := c.ReceiveMessages(ctx, "jobs", 5, 1500*time.Microsecond, 2*time.Second)
	if err != nil || len(msgs) != 1 || !reflect.DeepEqual(msgs[0], fixedQM) {
		t.Fatalf("receive: %+v, %v; want %+v", msgs, err, fixedQM)
	}
	if n, err := c.SettleMessages(ctx, "k=a", api.Extend, []string{"msg_1", "msg_2"}, time.Minute); n != 2 || err != nil {
		t.Fatalf("settle: %d, %v", n, err)
	}
	if _, err := c.DeadMessages(ctx, "nope", 10); api.CodeOf(err) != codes.NotFound {
		t.Fatalf("dead of an unknown queue: %v", err)
	}
	if n, err := c.Redrive(ctx, "jobs", nil); n != 4 || err != nil {
		t.Fatalf("redrive: %d, %v", n, err)
	}
	alarms, err := c.Alarms(ctx, "k=a", 50)
	if err != nil || len(alarms) != 1 || !reflect.DeepEqual(alarms[0], fixedAlarm) {
		t.Fatalf("alarms: %+v, %v", alarms, err)
	}
	due, err := c.AlarmsDue(ctx, 20)
	if err != nil || len(due) != 1 || due[0] != (api.AlarmDue{ShardID: "k=a", Node: "n1", Due: t0}) {
		t.Fatalf("due: %+v, %v", due, err)
	}
	want := []any{
		// A lease of 1.5 ms is rounded up to whole milliseconds.
		[]any{"receive", "jobs", 5, 2 * time.Millisecond, 2 * time.Second},
		[]any{"settle", "k=a", api.Extend, []string{"msg_1", "msg_2"}, time.Minute, uint64(7)},
		[]any{"dead", "nope", 10},
		[]any{"redrive", "jobs", []string(nil)},
		[]any{"alarms", "k=a", 50, uint64(7)},
		[]any{"due", 20},
	}
	if !reflect.DeepEqual(q.asked, want) {
		t.Fatalf("the node was asked\n%v\nwant\n%v", q.asked, want)
	}

	plain := startNode(t, &fakeShards{})
	if _, err := plain.ReceiveMessages(ctx, "jobs", 1, 0, 0); api.CodeOf(err) != codes.Unimplemented {
		t.Fatalf("a node without queues: %v, want UNIMPLEMENTED", err)
	}
	if _, err := c.SettleMessages(ctx, "k=a", 0, []string{"msg_1"}, 0); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("a settle without a verb: %v, want INVALID_ARGUMENT", err)
	}
}
