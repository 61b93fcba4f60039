package rpc

import (
	"context"
	"math"
	"time"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc/codes"
)

// Queues is the queue and alarm-listing half of the node API (*node.Node,
// ARCHITECTURE.md §8). A NodeServer whose Shards do not implement it
// answers these methods UNIMPLEMENTED. Methods are called concurrently and
// honour ctx; an unknown queue is NOT_FOUND.
type Queues interface {
	// ReceiveMessages leases up to max ready messages of queue on the
	// shards this node holds, waiting up to wait for one; each lease lasts
	// visibility (0: the queue's visibility timeout).
	ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error)
	// SettleMessages acks, nacks or extends messages of one shard and
	// answers how many it changed.
	SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error)
	// DeadMessages lists dead-letter messages of queue ("": every queue),
	// oldest first, up to limit.
	DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error)
	// Redrive puts dead-letter messages of queue (ids empty: all) back on
	// the queue and answers how many.
	Redrive(ctx context.Context, queue string, ids []string) (int, error)
	// Alarms lists one shard's alarms: pending by due time, then dead.
	Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error)
	// AlarmsDue lists the alarm index: each shard's next alarm.
	AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error)
}

func (s *NodeServer) queues() (Queues, error) {
	q, ok := s.shards.(Queues)
	if !ok {
		return nil, ToStatus(api.New(codes.Unimplemented, "this node serves no queues"))
	}
	return q, nil
}

// maxMS is the longest duration in whole milliseconds time.Duration holds.
const maxMS = uint64(math.MaxInt64 / int64(time.Millisecond))

// MillisToDuration converts a wire duration, capping what would overflow.
func MillisToDuration(ms uint64) time.Duration {
	return time.Duration(min(ms, maxMS)) * time.Millisecond
}

// DurationToMillis converts a duration for the wire, rounding up to whole
// milliseconds (a positive duration never becomes 0); negative is 0.
func DurationToMillis(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Millisecond - 1) / time.Millisecond)
}

func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// count32 bounds a count or limit for the wire.
func count32(n int) (uint32, error) {
	if n < 0 || int64(n) > math.MaxUint32 {
		return 0, api.Errorf(codes.InvalidArgument, "%d is out of range", n)
	}
	return uint32(n), nil
}

// SettleToProto converts a settle verb (0 for an unknown one).
func SettleToProto(s api.Settle) lunorav1.SettleVerb {
	switch s {
	case api.Ack:
		return lunorav1.SettleVerb_ACK
	case api.Nack:
		return lunorav1.SettleVerb_NACK
	case api.Extend:
		return lunorav1.SettleVerb_EXTEND
	}
	return lunorav1.SettleVerb_SETTLE_VERB_UNSPECIFIED
}

// SettleFromProto converts a settle verb; an unspecified or unknown one is
// 0, which no queue accepts.
func SettleFromProto(v lunorav1.SettleVerb) api.Settle {
	switch v {
	case lunorav1.SettleVerb_ACK:
		return api.Ack
	case lunorav1.SettleVerb_NACK:
		return api.Nack
	case lunorav1.SettleVerb_EXTEND:
		return api.Extend
	}
	return 0
}

// QueueMessageToProto converts a queue message.
func QueueMessageToProto(m api.QueueMessage) *lunorav1.QueueMessage {
	return &lunorav1.QueueMessage{
		Id: m.ID, Queue: m.Queue, ShardId: m.ShardID, Body: m.Body, Attempt: uint32(max(0, min(m.Attempt, math.MaxUint32))),
		EnqueuedUnixMs: unixMS(m.Enqueued), Receipt: m.Receipt, VisibleUntilUnixMs: unixMS(m.VisibleUntil),
		Error: m.Error, DiedUnixMs: unixMS(m.Died),
	}
}

// QueueMessageFromProto converts a queue message back.
func QueueMessageFromProto(m *lunorav1.QueueMessage) api.QueueMessage {
	return api.QueueMessage{
		ID: m.GetId(), Queue: m.GetQueue(), ShardID: m.GetShardId(), Body: m.GetBody(), Attempt: int(m.GetAttempt()),
		Enqueued: fromUnixMS(m.GetEnqueuedUnixMs()), Receipt: m.GetReceipt(), VisibleUntil: fromUnixMS(m.GetVisibleUntilUnixMs()),
		Error: m.GetError(), Died: fromUnixMS(m.GetDiedUnixMs()),
	}
}

func queueMessagesToProto(ms []api.QueueMessage) []*lunorav1.QueueMessage {
	out := make([]*lunorav1.QueueMessage, len(ms))
	for i, m := range ms {
		out[i] = QueueMessageToProto(m)
	}
	return out
}

func queueMessagesFromProto(ms []*lunorav1.QueueMessage) []api.QueueMessage {
	out := make([]api.QueueMessage, len(ms))
	for i, m := range ms {
		out[i] = QueueMessageFromProto(m)
	}
	return out
}

// AlarmToProto converts an alarm.
func AlarmToProto(a api.Alarm) *lunorav1.Alarm {
	return &lunorav1.Alarm{
		Id: a.ID, ShardId: a.ShardID, Function: a.Function, Args: a.Args, DueUnixMs: unixMS(a.Due),
		Attempts: uint32(max(0, min(a.Attempts, math.MaxUint32))), CreatedUnixMs: unixMS(a.Created),
		Dead: a.Dead, Error: a.Error, DiedUnixMs: unixMS(a.Died),
	}
}

// AlarmFromProto converts an alarm back.
func AlarmFromProto(m *lunorav1.Alarm) api.Alarm {
	return api.Alarm{
		ID: m.GetId(), ShardID: m.GetShardId(), Function: m.GetFunction(), Args: m.GetArgs(), Due: fromUnixMS(m.GetDueUnixMs()),
		Attempts: int(m.GetAttempts()), Created: fromUnixMS(m.GetCreatedUnixMs()),
		Dead: m.GetDead(), Error: m.GetError(), Died: fromUnixMS(m.GetDiedUnixMs()),
	}
}

// QueueReceive implements lunorav1.NodeServer.
func (s *NodeServer) QueueReceive(ctx context.Context, req *lunorav1.QueueReceiveRequest) (*lunorav1.QueueReceiveResponse, error) {
	q, err := s.queues()
	if err != nil {
		return nil, err
	}
	msgs, err := q.ReceiveMessages(ctx, req.GetQueue(), int(req.GetMax()), MillisToDuration(req.GetVisibilityMs()), MillisToDuration(req.GetWaitMs()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.QueueReceive", err)
	}
	return &lunorav1.QueueReceiveResponse{Messages: queueMessagesToProto(msgs)}, nil
}

// QueueSettle implements lunorav1.NodeServer. The request's ring epoch
// reaches Queues in ctx, as Call's does.
func (s *NodeServer) QueueSettle(ctx context.Context, req *lunorav1.QueueSettleRequest) (*lunorav1.QueueSettleResponse, error) {
	q, err := s.queues()
	if err != nil {
		return nil, err
	}
	ctx = api.WithRingEpoch(ctx, req.GetEpoch())
	how := SettleFromProto(req.GetVerb())
	if how == 0 {
		return nil, ToStatus(api.New(codes.InvalidArgument, "settle verb must be ACK, NACK or EXTEND"))
	}
	n, err := q.SettleMessages(ctx, req.GetShardId(), how, req.GetIds(), MillisToDuration(req.GetDelayMs()))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.QueueSettle", err)
	}
	settled, err := count32(n)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.QueueSettle", err)
	}
	return &lunorav1.QueueSettleResponse{Settled: settled}, nil
}

// QueueDead implements lunorav1.NodeServer.
func (s *NodeServer) QueueDead(ctx context.Context, req *lunorav1.QueueDeadRequest) (*lunorav1.QueueDeadResponse, error) {
	q, err := s.queues()
	if err != nil {
		return nil, err
	}
	msgs, err := q.DeadMessages(ctx, req.GetQueue(), int(min(req.GetLimit(), math.MaxInt32)))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.QueueDead", err)
	}
	return &lunorav1.QueueDeadResponse{Messages: queueMessagesToProto(msgs)}, nil
}

// QueueRedrive implements lunorav1.NodeServer.
func (s *NodeServer) QueueRedrive(ctx context.Context, req *lunorav1.QueueRedriveRequest) (*lunorav1.QueueRedriveResponse, error) {
	q, err := s.queues()
	if err != nil {
		return nil, err
	}
	n, err := q.Redrive(ctx, req.GetQueue(), req.GetIds())
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.QueueRedrive", err)
	}
	redriven, err := count32(n)
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.QueueRedrive", err)
	}
	return &lunorav1.QueueRedriveResponse{Redriven: redriven}, nil
}

// ListAlarms implements lunorav1.NodeServer.
func (s *NodeServer) ListAlarms(ctx context.Context, req *lunorav1.ListAlarmsRequest) (*lunorav1.ListAlarmsResponse, error) {
	q, err := s.queues()
	if err != nil {
		return nil, err
	}
	ctx = api.WithRingEpoch(ctx, req.GetEpoch())
	alarms, err := q.Alarms(ctx, req.GetShardId(), int(min(req.GetLimit(), math.MaxInt32)))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.ListAlarms", err)
	}
	out := &lunorav1.ListAlarmsResponse{Alarms: make([]*lunorav1.Alarm, len(alarms))}
	for i, a := range alarms {
		out.Alarms[i] = AlarmToProto(a)
	}
	return out, nil
}

// AlarmsDue implements lunorav1.NodeServer.
func (s *NodeServer) AlarmsDue(ctx context.Context, req *lunorav1.AlarmsDueRequest) (*lunorav1.AlarmsDueResponse, error) {
	q, err := s.queues()
	if err != nil {
		return nil, err
	}
	due, err := q.AlarmsDue(ctx, int(min(req.GetLimit(), math.MaxInt32)))
	if err != nil {
		return nil, statusFor(ctx, s.log, "Node.AlarmsDue", err)
	}
	out := &lunorav1.AlarmsDueResponse{Due: make([]*lunorav1.AlarmDue, len(due))}
	for i, d := range due {
		out.Due[i] = &lunorav1.AlarmDue{ShardId: d.ShardID, Node: d.Node, DueUnixMs: unixMS(d.Due)}
	}
	return out, nil
}

// ReceiveMessages leases ready messages of queue on the node's shards.
func (c *NodeClient) ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error) {
	n, err := count32(max)
	if err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "max: %v", err)
	}
	resp, err := c.node.QueueReceive(ctx, &lunorav1.QueueReceiveRequest{Queue: queue, Max: n, VisibilityMs: DurationToMillis(visibility), WaitMs: DurationToMillis(wait)})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return queueMessagesFromProto(resp.GetMessages()), nil
}

// SettleMessages acks, nacks or extends messages of a shard of the node,
// routed with ctx's ring epoch.
func (c *NodeClient) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	resp, err := c.node.QueueSettle(ctx, &lunorav1.QueueSettleRequest{ShardId: shardID, Verb: SettleToProto(how), Ids: ids, DelayMs: DurationToMillis(delay), Epoch: api.RingEpochOf(ctx)})
	if err != nil {
		return 0, c.fromStatus(err)
	}
	return int(resp.GetSettled()), nil
}

// DeadMessages lists dead-letter messages on the node's shards.
func (c *NodeClient) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	n, err := count32(limit)
	if err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "limit: %v", err)
	}
	resp, err := c.node.QueueDead(ctx, &lunorav1.QueueDeadRequest{Queue: queue, Limit: n})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return queueMessagesFromProto(resp.GetMessages()), nil
}

// Redrive puts dead-letter messages on the node's shards back on their
// queue.
func (c *NodeClient) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	resp, err := c.node.QueueRedrive(ctx, &lunorav1.QueueRedriveRequest{Queue: queue, Ids: ids})
	if err != nil {
		return 0, c.fromStatus(err)
	}
	return int(resp.GetRedriven()), nil
}

// Alarms lists one shard's alarms, routed with ctx's ring epoch.
func (c *NodeClient) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	n, err := count32(limit)
	if err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "limit: %v", err)
	}
	resp, err := c.node.ListAlarms(ctx, &lunorav1.ListAlarmsRequest{ShardId: shardID, Limit: n, Epoch: api.RingEpochOf(ctx)})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	out := make([]api.Alarm, len(resp.GetAlarms()))
	for i, a := range resp.GetAlarms() {
		out[i] = AlarmFromProto(a)
	}
	return out, nil
}

// AlarmsDue lists the node's alarm index.
func (c *NodeClient) AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error) {
	n, err := count32(limit)
	if err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "limit: %v", err)
	}
	resp, err := c.node.AlarmsDue(ctx, &lunorav1.AlarmsDueRequest{Limit: n})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	out := make([]api.AlarmDue, len(resp.GetDue()))
	for i, d := range resp.GetDue() {
		out[i] = api.AlarmDue{ShardID: d.GetShardId(), Node: d.GetNode(), Due: fromUnixMS(d.GetDueUnixMs())}
	}
	return out, nil
}

var _ Queues = (*NodeClient)(nil)
