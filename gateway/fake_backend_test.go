package gateway_test

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

// backendCall is one request the fake backend received.
type backendCall struct {
	Method  string // "Call" or "Exec"
	ShardID string
	Name    string // function name or SQL
	Args    map[string]any
}

// fakeBackend is an in-memory gateway.Backend. By default Call and Exec
// answer one row echoing their inputs (columns sorted by name). answer, when
// set, replaces that; every method honours ctx: an answer that blocks on
// ctx.Done() models a node that never replies.
type fakeBackend struct {
	mu     sync.Mutex
	calls  []backendCall
	answer func(ctx context.Context, c backendCall) (*api.Result, error)
	deltas chan string // feeds the streams Subscribe returns
	fakeQueues
}

func (f *fakeBackend) setAnswer(a func(ctx context.Context, c backendCall) (*api.Result, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = a
}

func (f *fakeBackend) last() (backendCall, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return backendCall{}, false
	}
	return f.calls[len(f.calls)-1], true
}

func (f *fakeBackend) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeBackend) do(ctx context.Context, c backendCall) (*api.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	answer := f.answer
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if answer != nil {
		return answer(ctx, c)
	}
	names := make([]string, 0, len(c.Args))
	for k := range c.Args {
		names = append(names, k)
	}
	sort.Strings(names)
	row := make([]any, len(names))
	for i, n := range names {
		row[i] = c.Args[n]
	}
	return &api.Result{Columns: names, Rows: [][]any{row}, Seq: 7, ShardID: c.ShardID, RowsAffected: 1}, nil
}

func (f *fakeBackend) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	return f.do(ctx, backendCall{Method: "Call", ShardID: shardID, Name: function, Args: args})
}

func (f *fakeBackend) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	return f.do(ctx, backendCall{Method: "Exec", ShardID: shardID, Name: sql, Args: params})
}

func (f *fakeBackend) Status(ctx context.Context) (*api.Status, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &api.Status{NodeID: "dev", NodeAddress: "in-process", Version: "test", ActiveShards: 3, ShardsOnDisk: 4, InFlight: 1, UptimeSeconds: 12}, nil
}

// blockUntilDone is an answer modelling an unreachable peer.
func blockUntilDone(ctx context.Context, _ backendCall) (*api.Result, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeBackend) Join(ctx context.Context, req api.JoinRequest) (string, error) {
	return "", api.New(codes.Unimplemented, "fake backend: no global tier")
}

func (f *fakeBackend) RemoveNode(ctx context.Context, req api.RemoveRequest) error {
	return api.New(codes.Unimplemented, "fake backend: no global tier")
}

func (f *fakeBackend) RegisterShard(ctx context.Context, id, owner string, forwarded bool) (bool, string, error) {
	return false, "", api.New(codes.Unimplemented, "fake backend: no global tier")
}

// Subscribe answers a stream whose first update is a snapshot at seq 1
// echoing the shard, then one delta per value sent on f.deltas.
func (f *fakeBackend) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	f.mu.Lock()
	f.calls = append(f.calls, backendCall{Method: "Subscribe", ShardID: shardID, Name: function, Args: args})
	deltas := f.deltas
	f.mu.Unlock()
	return &fakeStream{shardID: shardID, deltas: deltas}, nil
}

type fakeStream struct {
	shardID string
	sent    bool
	seq     uint64
	deltas  chan string
}

func (s *fakeStream) Next(ctx context.Context) (*api.Update, error) {
	if !s.sent {
		s.sent, s.seq = true, 1
		return &api.Update{Kind: api.UpdateSnapshot, Seq: 1, ShardID: s.shardID, Columns: []string{"id", "body"}, Rows: [][]any{{int64(1), "first"}}, Keyed: true}, nil
	}
	select {
	case body := <-s.deltas:
		s.seq++
		return &api.Update{Kind: api.UpdateDelta, Seq: s.seq, ShardID: s.shardID, Keyed: true,
			Changes: []api.RowChange{{Op: api.ChangeInsert, Key: []any{int64(s.seq)}, Row: []any{int64(s.seq), body}}}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *fakeStream) Close() {}

// fakeQueue is the name of the one queue the fake backend declares; any
// other is NOT_FOUND.
const fakeQueue = "room-events"

// settleCall is one SettleMessages the fake backend received.
type settleCall struct {
	ShardID string
	How     api.Settle
	IDs     []string
	Delay   time.Duration
}

// fakeQueues is the fake backend's queue state: messages put waiting for
// a receive, the settles and redrives it was asked for.
type fakeQueues struct {
	qmu      sync.Mutex
	ready    []api.QueueMessage
	arrived  chan struct{} // closed and replaced when put adds messages
	settles  []settleCall
	receives []int // the max of each receive
	redrives [][]string
	dead     []api.QueueMessage
}

// put makes messages ready on shard room_id=<shard> of fakeQueue.
func (f *fakeBackend) put(shard string, ids ...string) {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	for _, id := range ids {
		f.ready = append(f.ready, api.QueueMessage{ID: id, Queue: fakeQueue, ShardID: "room_id=" + shard, Body: `{"id":"` + id + `"}`, Enqueued: time.Unix(1700000000, 0)})
	}
	if f.arrived != nil {
		close(f.arrived)
		f.arrived = nil
	}
}

func (f *fakeBackend) settleCalls() []settleCall {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	return append([]settleCall(nil), f.settles...)
}

func (f *fakeBackend) receiveMaxes() []int {
	f.qmu.Lock()
	defer f.qmu.Unlock()
	return append([]int(nil), f.receives...)
}

func unknownQueue(q string) error {
	return api.Errorf(codes.NotFound, "unknown queue %q", q)
}

// ReceiveMessages hands out up to max ready messages, waiting up to wait
// for one.
func (f *fakeBackend) ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error) {
	if queue != fakeQueue {
		return nil, unknownQueue(queue)
	}
	if visibility == 0 {
		visibility = 30 * time.Second
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.qmu.Lock()
		if len(f.ready) > 0 || wait == 0 {
			n := min(max, len(f.ready))
			out := append([]api.QueueMessage(nil), f.ready[:n]...)
			f.ready = f.ready[n:]
			f.receives = append(f.receives, max)
			f.qmu.Unlock()
			for i := range out {
				out[i].Attempt++
				out[i].Receipt = api.ReceiptOf(out[i].ShardID, out[i].ID)
				out[i].VisibleUntil = time.Now().Add(visibility)
			}
			return out, nil
		}
		if f.arrived == nil {
			f.arrived = make(chan struct{})
		}
		arrived := f.arrived
		f.qmu.Unlock()
		select {
		case <-arrived:
		case <-timer.C:
			wait = 0
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// SettleMessages records the settle and answers every ID settled.
func (f *fakeBackend) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f.qmu.Lock()
	defer f.qmu.Unlock()
	f.settles = append(f.settles, settleCall{ShardID: shardID, How: how, IDs: append([]string(nil), ids...), Delay: delay})
	return len(ids), nil
}

func (f *fakeBackend) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	if queue != fakeQueue {
		return nil, unknownQueue(queue)
	}
	f.qmu.Lock()
	defer f.qmu.Unlock()
	return append([]api.QueueMessage(nil), f.dead[:min(limit, len(f.dead))]...), nil
}

func (f *fakeBackend) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	if queue != fakeQueue {
		return 0, unknownQueue(queue)
	}
	f.qmu.Lock()
	defer f.qmu.Unlock()
	f.redrives = append(f.redrives, ids)
	if len(ids) == 0 {
		return len(f.dead), nil
	}
	return len(ids), nil
}

// Alarms answers one pending and one dead alarm for room_id=r1, none for
// other shards.
func (f *fakeBackend) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	if shardID != "room_id=r1" {
		return []api.Alarm{}, nil
	}
	return []api.Alarm{
		{ID: "alm_1", ShardID: shardID, Function: "messages:send", Args: `{"room_id":"r1"}`, Due: time.Unix(1800000000, 0), Created: time.Unix(1700000000, 0)},
		{ID: "alm_0", ShardID: shardID, Function: "messages:send", Args: `{}`, Due: time.Unix(1700000000, 0), Attempts: 5, Dead: true, Error: "boom", Died: time.Unix(1700000100, 0)},
	}[:min(limit, 2)], nil
}

func (f *fakeBackend) AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error) {
	return []api.AlarmDue{{ShardID: "room_id=r1", Node: "dev", Due: time.Unix(1800000000, 0)}}, nil
}
