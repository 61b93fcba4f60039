package shardhost_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// queueYAML: notes:post writes a note, enqueues an event and schedules an
// alarm, and may then fail on purpose; notes:notify enqueues on deliver,
// whose consumer inbox:add refuses the body 'poison'.
const queueYAML = `
tables:
  notes:
    shard_by: room
    columns:
      room: {type: text, not_null: true}
      n: int
      body: text
    primary_key: [n]
  inbox:
    shard_by: user
    columns:
      user: {type: text, not_null: true}
      n: int
      msg: text
    primary_key: [n]
queues:
  events:
    max_attempts: 2
    backoff: 10ms
    backoff_max: 20ms
    visibility_timeout: 1s
  deliver:
    consumer: inbox:add
    max_attempts: 3
    backoff: 10ms
    backoff_max: 50ms
  audit:
  withdlq:
    max_attempts: 1
    dead_letter: audit
functions:
  notes:post:
    kind: mutation
    shard_by: room
    args:
      room: text
      n: int
      body: text
      fail: {type: bool, default: false}
    sql:
      - INSERT INTO notes(room, n, body) VALUES (:room, :n, :body)
      - SELECT lunora_enqueue('events', json_object('room', :room, 'n', :n))
      - SELECT lunora_schedule(60000, 'notes:noop', json_object('room', :room))
      - SELECT lunora_assert(NOT :fail, 'failing on purpose')
  notes:notify:
    kind: mutation
    shard_by: room
    args:
      room: text
      user: text
      n: int
      msg: text
    sql:
      - SELECT lunora_enqueue('deliver', json_object('user', :user, 'n', :n, 'msg', :msg)) AS id
  notes:enqueue:
    kind: mutation
    shard_by: room
    args:
      room: text
      queue: text
      body: text
    sql:
      - SELECT lunora_enqueue(:queue, :body) AS id
  notes:noop:
    kind: mutation
    shard_by: room
    args:
      room: text
    sql:
      - SELECT 1
  notes:peek:
    kind: query
    shard_by: room
    args:
      room: text
    sql:
      - SELECT lunora_enqueue('events', '{}')
  inbox:add:
    kind: mutation
    shard_by: user
    args:
      user: text
      n: int
      msg: text
    sql:
      - SELECT lunora_assert(:msg <> 'poison', 'poison message')
      - INSERT INTO inbox(user, n, msg) VALUES (:user, :n, :msg)
  inbox:list:
    kind: query
    shard_by: user
    args:
      user: text
    sql:
      - SELECT n, msg FROM inbox ORDER BY n
`

// clock is a settable clock for the queue's lease and back-off times.
type clock struct{ ms atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ms.Store(time.Now().UnixMilli())
	return c
}
func (c *clock) now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *clock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }
func queueApp(t testing.TB) *schema.App  { return mustParse(t, queueYAML) }
func post(h *shardhost.Host, room string, n int, fail bool) error {
	_, err := h.Call(context.Background(), "room="+room, "notes:post", map[string]any{"room": room, "n": int64(n), "body": "b", "fail": fail})
	return err
}

func mustParse(t testing.TB, y string) *schema.App {
	t.Helper()
	app, err := schema.Parse("queues.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func queueConfig(t testing.TB, dir string, c *clock) shardhost.Config {
	cfg := shardhost.DefaultLocalConfig()
	cfg.Dir, cfg.App = dir, queueApp(t)
	if c != nil {
		cfg.Now = c.now
	}
	return cfg
}

func receiveN(t testing.TB, h *shardhost.Host, queue string, max int) []api.QueueMessage {
	t.Helper()
	msgs, err := h.ReceiveMessages(context.Background(), queue, max, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func ids(ms []api.QueueMessage) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func bodies(ms []api.QueueMessage) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Body)
	}
	return strings.Join(out, " ")
}

// TestScheduleAndEnqueueRollBackTogether: a mutation that schedules an
// alarm and enqueues a message and then fails leaves neither; one that
// commits leaves both.
func TestScheduleAndEnqueueRollBackTogether(t *testing.T) {
	h := openAlarmHost(t, queueConfig(t, t.TempDir(), nil))
	if err := post(h, "r", 1, true); err == nil || !strings.Contains(err.Error(), "failing on purpose") {
		t.Fatalf("post with fail: %v", err)
	}
	if got := adminRows(t, h, "room=r", "SELECT count(*) FROM notes"); got[0][0] != int64(0) {
		t.Fatalf("notes after the failed mutation: %v", got)
	}
	if msgs := receiveN(t, h, "events", 10); len(msgs) != 0 {
		t.Fatalf("the failed mutation left messages: %v", msgs)
	}
	if al, err := h.Alarms(context.Background(), "room=r", 10); err != nil || len(al) != 0 {
		t.Fatalf("the failed mutation left alarms: %v %v", al, err)
	}
	if idx := h.AlarmIndex(); len(idx) != 0 {
		t.Fatalf("alarm index after the failed mutation: %v", idx)
	}
	if err := post(h, "r", 2, false); err != nil {
		t.Fatal(err)
	}
	msgs := receiveN(t, h, "events", 10)
	if len(msgs) != 1 || msgs[0].Body != `{"room":"r","n":2}` || msgs[0].Attempt != 1 || msgs[0].ShardID != "room=r" {
		t.Fatalf("messages after the commit: %+v", msgs)
	}
	if al, err := h.Alarms(context.Background(), "room=r", 10); err != nil || len(al) != 1 || al[0].Function != "notes:noop" {
		t.Fatalf("alarms after the commit: %+v %v", al, err)
	}
}

// TestQueueFIFOPerShard: messages of a shard are handed out in enqueue
// order, and none while an earlier one is leased; other shards are not
// held up.
func TestQueueFIFOPerShard(t *testing.T) {
	h := openAlarmHost(t, queueConfig(t, t.TempDir(), nil))
	for i := range 5 {
		if err := post(h, "a", i, false); err != nil {
			t.Fatal(err)
		}
	}
	first := receiveN(t, h, "events", 3)
	if got := bodies(first); got != `{"room":"a","n":0} {"room":"a","n":1} {"room":"a","n":2}` {
		t.Fatalf("first receive: %s", got)
	}
	if err := post(h, "b", 0, false); err != nil {
		t.Fatal(err)
	}
	if got := bodies(receiveN(t, h, "events", 10)); got != `{"room":"b","n":0}` {
		t.Fatalf("with a's head leased, receive gave %s; want only b's message", got)
	}
	n, err := h.SettleMessages(context.Background(), "room=a", api.Ack, ids(first[:2]), 0)
	if err != nil || n != 2 {
		t.Fatalf("ack: %d %v", n, err)
	}
	if msgs := receiveN(t, h, "events", 10); len(msgs) != 0 {
		t.Fatalf("a's third message is still leased, yet receive gave %s", bodies(msgs))
	}
	if _, err := h.SettleMessages(context.Background(), "room=a", api.Ack, ids(first[2:]), 0); err != nil {
		t.Fatal(err)
	}
	if got := bodies(receiveN(t, h, "events", 10)); got != `{"room":"a","n":3} {"room":"a","n":4}` {
		t.Fatalf("after the acks: %s", got)
	}
	// Acking twice, or a message of another shard, changes nothing.
	if n, err := h.SettleMessages(context.Background(), "room=b", api.Ack, ids(first[:1]), 0); err != nil || n != 0 {
		t.Fatalf("ack of an acked message: %d %v", n, err)
	}
}

// TestQueueLeaseExpiresNackBacksOffAndDeadLetters: an unacknowledged
// message is delivered again after its lease; a nack waits out the
// back-off; after max_attempts deliveries the message is dead, listed, and
// a redrive delivers it again from attempt 1.
func TestQueueLeaseExpiresNackBacksOffAndDeadLetters(t *testing.T) {
	c := newClock()
	h := openAlarmHost(t, queueConfig(t, t.TempDir(), c))
	if err := post(h, "x", 1, false); err != nil {
		t.Fatal(err)
	}
	m1 := receiveN(t, h, "events", 1)
	if len(m1) != 1 || m1[0].Attempt != 1 {
		t.Fatalf("first delivery: %+v", m1)
	}
	if len(receiveN(t, h, "events", 1)) != 0 {
		t.Fatal("delivered again while leased")
	}
	c.advance(1100 * time.Millisecond) // the 1s visibility timeout passes
	m2 := receiveN(t, h, "events", 1)
	if len(m2) != 1 || m2[0].ID != m1[0].ID || m2[0].Attempt != 2 {
		t.Fatalf("after the lease: %+v (want %s at attempt 2)", m2, m1[0].ID)
	}
	// The second attempt was the last (max_attempts: 2): a nack kills it.
	if n, err := h.SettleMessages(context.Background(), "room=x", api.Nack, ids(m2), 0); err != nil || n != 1 {
		t.Fatalf("nack: %d %v", n, err)
	}
	if msgs := receiveN(t, h, "events", 1); len(msgs) != 0 {
		t.Fatalf("a dead message was delivered: %+v", msgs)
	}
	dead, err := h.DeadMessages(context.Background(), "events", 10)
	if err != nil || len(dead) != 1 || dead[0].ID != m1[0].ID || dead[0].Attempt != 2 || dead[0].Error != "nacked by a consumer" {
		t.Fatalf("dead letters: %+v %v", dead, err)
	}
	n, err := h.Redrive(context.Background(), "events", nil)
	if err != nil || n != 1 {
		t.Fatalf("redrive: %d %v", n, err)
	}
	if dead, _ := h.DeadMessages(context.Background(), "events", 10); len(dead) != 0 {
		t.Fatalf("dead letters after the redrive: %+v", dead)
	}
	m3 := receiveN(t, h, "events", 1)
	if len(m3) != 1 || m3[0].ID != m1[0].ID || m3[0].Attempt != 1 {
		t.Fatalf("after the redrive: %+v", m3)
	}
	// A nack before the last attempt backs off (10ms), then redelivers.
	if _, err := h.SettleMessages(context.Background(), "room=x", api.Nack, ids(m3), 0); err != nil {
		t.Fatal(err)
	}
	if len(receiveN(t, h, "events", 1)) != 0 {
		t.Fatal("delivered during the back-off")
	}
	c.advance(15 * time.Millisecond)
	if m4 := receiveN(t, h, "events", 1); len(m4) != 1 || m4[0].Attempt != 2 {
		t.Fatalf("after the back-off: %+v", m4)
	}
	// An extend keeps a lease past its timeout.
	c.advance(2 * time.Second)
	if err := post(h, "y", 1, false); err != nil {
		t.Fatal(err)
	}
	my := receiveN(t, h, "events", 10)
	var y []api.QueueMessage
	for _, m := range my {
		if m.ShardID == "room=y" {
			y = append(y, m)
		}
	}
	if len(y) != 1 {
		t.Fatalf("y's message: %+v", my)
	}
	if n, err := h.SettleMessages(context.Background(), "room=y", api.Extend, ids(y), 10*time.Second); err != nil || n != 1 {
		t.Fatalf("extend: %d %v", n, err)
	}
	c.advance(5 * time.Second)
	for _, m := range receiveN(t, h, "events", 10) {
		if m.ShardID == "room=y" {
			t.Fatalf("an extended lease expired at its old timeout: %+v", m)
		}
	}
}

// TestQueueDeadLetterQueue: a queue with dead_letter moves its dead
// messages onto that queue, with the failure recorded.
func TestQueueDeadLetterQueue(t *testing.T) {
	h := openAlarmHost(t, queueConfig(t, t.TempDir(), nil))
	if _, err := h.Call(context.Background(), "room=d", "notes:enqueue", map[string]any{"room": "d", "queue": "withdlq", "body": `{"k":1}`}); err != nil {
		t.Fatal(err)
	}
	m := receiveN(t, h, "withdlq", 1)
	if _, err := h.SettleMessages(context.Background(), "room=d", api.Nack, ids(m), 0); err != nil {
		t.Fatal(err)
	}
	got := receiveN(t, h, "audit", 10)
	if len(got) != 1 || got[0].ID != m[0].ID || got[0].Body != `{"k":1}` || got[0].Error != "nacked by a consumer" {
		t.Fatalf("audit queue: %+v", got)
	}
	if dead, _ := h.DeadMessages(context.Background(), "withdlq", 10); len(dead) != 0 {
		t.Fatalf("dead list of a queue with a dead_letter queue: %+v", dead)
	}
}

// TestQueueRefusals: clear errors for what cannot be enqueued or
// received.
func TestQueueRefusals(t *testing.T) {
	h := openAlarmHost(t, queueConfig(t, t.TempDir(), nil))
	ctx := context.Background()
	for _, tc := range []struct {
		queue, body, want string
	}{
		{"nope", `{}`, `queue "nope" is not declared`},
		{"events", `{not json`, "the body must be JSON"},
		{"deliver", `{"n":1,"msg":"m"}`, "queue deliver"},
		{"deliver", `[1]`, "JSON object"},
		{"events", strings.Repeat("x", shardhost.MaxMessageBytes+1), "over"},
	} {
		_, err := h.Call(ctx, "room=r", "notes:enqueue", map[string]any{"room": "r", "queue": tc.queue, "body": tc.body})
		if api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("enqueue %s %.30q: %v; want INVALID_ARGUMENT mentioning %q", tc.queue, tc.body, err, tc.want)
		}
	}
	if _, err := h.Call(ctx, "room=r", "notes:peek", map[string]any{"room": "r"}); api.CodeOf(err) != codes.FailedPrecondition {
		t.Errorf("enqueue in a query: %v", err)
	}
	if msgs := receiveN(t, h, "events", 10); len(msgs) != 0 {
		t.Fatalf("refused enqueues left messages: %+v", msgs)
	}
	if _, err := h.ReceiveMessages(ctx, "nope", 1, 0, 0); api.CodeOf(err) != codes.NotFound {
		t.Errorf("receive from an undeclared queue: %v", err)
	}
	for _, max := range []int{0, shardhost.MaxReceive + 1} {
		if _, err := h.ReceiveMessages(ctx, "events", max, 0, 0); api.CodeOf(err) != codes.InvalidArgument {
			t.Errorf("receive max %d: %v", max, err)
		}
	}
	if _, err := h.ReceiveMessages(ctx, "events", 1, time.Millisecond, 0); api.CodeOf(err) != codes.InvalidArgument {
		t.Errorf("receive with a 1ms visibility: %v", err)
	}
	if _, err := h.SettleMessages(ctx, "room=r", api.Ack, []string{"x"}, 0); api.CodeOf(err) != codes.InvalidArgument {
		t.Errorf("ack of a malformed ID: %v", err)
	}
	if _, err := h.SettleMessages(ctx, "room=never", api.Ack, []string{"msg_1"}, 0); !errors.Is(err, shardhost.ErrShardElsewhere) {
		t.Errorf("ack on a shard not here: %v", err)
	}
	if st, _ := h.Status(ctx); st.ShardsOnDisk != 1 {
		t.Errorf("%d shards on disk: settling created one", st.ShardsOnDisk)
	}
}

// TestQueueWaitWakesOnEnqueue: a receive waiting for messages returns as
// soon as a commit enqueues one.
func TestQueueWaitWakesOnEnqueue(t *testing.T) {
	h := openAlarmHost(t, queueConfig(t, t.TempDir(), nil))
	got := make(chan []api.QueueMessage, 1)
	go func() {
		msgs, _ := h.ReceiveMessages(context.Background(), "events", 10, 0, 30*time.Second)
		got <- msgs
	}()
	start := time.Now()
	if err := post(h, "w", 1, false); err != nil {
		t.Fatal(err)
	}
	select {
	case msgs := <-got:
		if len(msgs) != 1 {
			t.Fatalf("woken with %+v", msgs)
		}
		t.Logf("woken %s after the enqueue started", time.Since(start))
	case <-time.After(20 * time.Second):
		t.Fatal("a waiting receive was not woken by the enqueue")
	}
}

// TestQueueSurvivesRestartAndLostIndex: messages of hibernated shards are
// found after a restart, and after the node's index is deleted (rebuilt
// from the shard files).
func TestQueueSurvivesRestartAndLostIndex(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	cfg := queueConfig(t, dir, c)
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		room := fmt.Sprint("s", i)
		if _, err := h.Call(context.Background(), "room="+room, "notes:enqueue", map[string]any{"room": room, "queue": "audit", "body": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A dead letter, too.
	if err := post(h, "dead", 0, false); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m := receiveN(t, h, "events", 1)
		if _, err := h.SettleMessages(context.Background(), "room=dead", api.Nack, ids(m), 0); err != nil {
			t.Fatal(err)
		}
		c.advance(time.Second) // past the back-off
	}
	shutdown(t, h)
	for _, lose := range []bool{false, true} {
		if lose {
			for _, p := range []string{"alarms.db", "alarms.db-wal", "alarms.db-shm"} {
				os.Remove(filepath.Join(dir, p))
			}
		}
		h, err = shardhost.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		msgs := receiveN(t, h, "audit", shardhost.MaxReceive)
		if len(msgs) != 20 {
			t.Fatalf("lost index %v: %d messages after the restart, want 20", lose, len(msgs))
		}
		if dead, err := h.DeadMessages(context.Background(), "", 10); err != nil || len(dead) != 1 {
			t.Fatalf("lost index %v: dead letters %+v %v", lose, dead, err)
		}
		shutdown(t, h)
		c.advance(time.Minute) // past the leases
	}
}

// TestQueueMovesWithAHandoff: the outbox travels in the shard's file; the
// receiver indexes it on install and delivers, the sender no longer does.
func TestQueueMovesWithAHandoff(t *testing.T) {
	ctx := context.Background()
	cfgA, cfgB := queueConfig(t, t.TempDir(), nil), queueConfig(t, t.TempDir(), nil)
	cfgA.NodeID, cfgB.NodeID = "a", "b"
	a, b := openAlarmHost(t, cfgA), openAlarmHost(t, cfgB)
	for i := range 3 {
		if err := post(a, "m", i, false); err != nil {
			t.Fatal(err)
		}
	}
	f := copyShard(t, ctx, a, b, "room=m")
	if err := a.Drop(f, "b"); err != nil {
		t.Fatal(err)
	}
	if msgs := receiveN(t, a, "events", 10); len(msgs) != 0 {
		t.Fatalf("the sender delivered after the drop: %+v", msgs)
	}
	if got := bodies(receiveN(t, b, "events", 10)); got != `{"room":"m","n":0} {"room":"m","n":1} {"room":"m","n":2}` {
		t.Fatalf("the receiver delivered %s", got)
	}
}

// TestQueueConsumerFunction: a queue's consumer function runs for each
// message on the shard its arguments name; a poison message is retried
// max_attempts times, dead-lettered, and run again (max_attempts more
// times) once redriven.
func TestQueueConsumerFunction(t *testing.T) {
	h := openAlarmHost(t, queueConfig(t, t.TempDir(), nil))
	var mu sync.Mutex
	calls := map[string]int{}
	h.StartConsumers(func(ctx context.Context, shardID, function string, args map[string]any) error {
		mu.Lock()
		calls[fmt.Sprint(args["msg"])]++
		mu.Unlock()
		_, err := h.Call(ctx, shardID, function, args)
		return err
	})
	notify := func(user string, n int, msg string) {
		t.Helper()
		if _, err := h.Call(context.Background(), "room=r", "notes:notify", map[string]any{"room": "r", "user": user, "n": int64(n), "msg": msg}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		notify(fmt.Sprint("u", i%3), i, fmt.Sprint("hello ", i))
	}
	notify("u9", 99, "poison")
	waitFor(t, 20*time.Second, func() error {
		total := 0
		for u := range 3 {
			res, err := h.Call(context.Background(), fmt.Sprint("user=u", u), "inbox:list", map[string]any{"user": fmt.Sprint("u", u)})
			if err != nil {
				return err
			}
			total += len(res.Rows)
		}
		if total != 10 {
			return fmt.Errorf("%d of 10 delivered", total)
		}
		dead, err := h.DeadMessages(context.Background(), "deliver", 10)
		if err != nil || len(dead) != 1 {
			return fmt.Errorf("dead letters %+v %v", dead, err)
		}
		if !strings.Contains(dead[0].Error, "poison message") || dead[0].Attempt != 3 {
			return fmt.Errorf("dead letter %+v", dead[0])
		}
		return nil
	})
	mu.Lock()
	if calls["poison"] != 3 {
		t.Errorf("the poison message ran %d times, want max_attempts = 3", calls["poison"])
	}
	for i := range 10 {
		if n := calls[fmt.Sprint("hello ", i)]; n != 1 {
			t.Errorf("message %d ran %d times", i, n)
		}
	}
	mu.Unlock()
	if n, err := h.Redrive(context.Background(), "deliver", nil); err != nil || n != 1 {
		t.Fatalf("redrive: %d %v", n, err)
	}
	waitFor(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if calls["poison"] != 6 {
			return fmt.Errorf("the redriven poison message ran %d times in all, want 6", calls["poison"])
		}
		return nil
	})
}

// TestChatNotifications: the chat example's messages:post enqueues a
// notification (and still answers the new message's ID: lunora_enqueue
// leaves last_insert_rowid() alone); the notifications queue's consumer
// writes it to the activity feed in the root shard. rooms:create enqueues
// a room-events message for external consumers.
func TestChatNotifications(t *testing.T) {
	h := newHost(t, nil)
	h.StartConsumers(func(ctx context.Context, shardID, function string, args map[string]any) error {
		_, err := h.Call(ctx, shardID, function, args)
		return err
	})
	alice := as("alice", map[string]any{"rooms": []any{"r1"}})
	var posted []int64
	for _, body := range []string{"one", "two", "three"} {
		res, err := h.Call(alice, "room_id=r1", "messages:post", map[string]any{"room_id": "r1", "body": body})
		if err != nil {
			t.Fatal(err)
		}
		posted = append(posted, res.Rows[0][0].(int64))
	}
	ids := adminRows(t, h, "room_id=r1", "SELECT id FROM messages ORDER BY id")
	for i, row := range ids {
		if row[0] != posted[i] {
			t.Fatalf("messages:post answered ids %v, the messages are %v", posted, ids)
		}
	}
	waitFor(t, 10*time.Second, func() error {
		res, err := h.Call(context.Background(), "__root__", "activity:recent", map[string]any{})
		if err != nil {
			return err
		}
		if len(res.Rows) != 3 {
			return fmt.Errorf("activity %v", res.Rows)
		}
		for i, row := range res.Rows { // newest first
			if row[0] != "r1" || row[1] != "alice" || row[2] != posted[2-i] {
				return fmt.Errorf("activity row %d: %v", i, row)
			}
		}
		return nil
	})
	res, err := h.Call(context.Background(), "room_id=new", "rooms:create", map[string]any{"room_id": "new", "title": "New"})
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsAffected != 1 {
		t.Errorf("rooms:create affected %d rows, want 1 (the outbox row is not the caller's)", res.RowsAffected)
	}
	msgs, err := h.ReceiveMessages(context.Background(), "room-events", 10, 0, 0)
	if err != nil || len(msgs) != 1 || msgs[0].Body != `{"type":"room.created","room_id":"new","title":"New"}` {
		t.Fatalf("room-events: %+v %v", msgs, err)
	}
}

// TestQueueHintDroppedWhenDrained: once a shard's queue is empty and the
// shard hibernates, the node's durable hint for it goes, so a restart
// opens no shard for it; a shard hibernated with messages keeps its hint.
func TestQueueHintDroppedWhenDrained(t *testing.T) {
	dir := t.TempDir()
	cfg := queueConfig(t, dir, nil)
	h := openAlarmHost(t, cfg)
	for _, room := range []string{"drained", "full"} {
		if _, err := h.Call(context.Background(), "room="+room, "notes:enqueue", map[string]any{"room": room, "queue": "audit", "body": `{}`}); err != nil {
			t.Fatal(err)
		}
	}
	msgs := receiveN(t, h, "audit", 10)
	for _, m := range msgs {
		if m.ShardID == "room=drained" {
			if _, err := h.SettleMessages(context.Background(), m.ShardID, api.Ack, []string{m.ID}, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	hints := func() map[string]bool {
		out := map[string]bool{}
		for _, r := range shardhost.QueueHints(h) {
			out[r] = true
		}
		return out
	}
	waitFor(t, 10*time.Second, func() error { // the shards hibernate (IdleTimeout 200ms)
		if got := hints(); got["room=drained/audit"] || !got["room=full/audit"] {
			return fmt.Errorf("hints %v", got)
		}
		return nil
	})
}
