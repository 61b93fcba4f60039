package shardhost_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// alarmYAML: jobs:add schedules jobs:run (which records its firing and may
// fail on purpose for its first attempts) and fails afterwards when asked.
const alarmYAML = `
tables:
  fired:
    shard_by: job
    columns:
      n: int
      job: {type: text, not_null: true}
      tag: {type: text, not_null: true}
      attempt: {type: int, not_null: true}
      at: {type: int, not_null: true}
      due: {type: int, not_null: true}
    primary_key: [n]
  teams:
    shard_by: team
    columns:
      team: text
    primary_key: [team]
  ids:
    shard_by: job
    columns:
      job: text
      tag: text
      alarm: text
    primary_key: [tag]
functions:
  jobs:add:
    kind: mutation
    shard_by: job
    args:
      job: text
      tag: text
      when: int
      fail_until: {type: int, default: 0}
      then_fail: {type: bool, default: false}
    sql:
      - INSERT INTO ids(job, tag, alarm) VALUES (:job, :tag, lunora_schedule(:when, 'jobs:run', json_object('job', :job, 'tag', :tag, 'fail_until', :fail_until, 'due', CASE WHEN :when < 1000000000000 THEN lunora_now() + :when ELSE :when END)))
      - SELECT lunora_assert(NOT :then_fail, 'failing on purpose')
      - SELECT alarm FROM ids WHERE tag = :tag
  jobs:add_many:
    kind: mutation
    shard_by: job
    args:
      job: text
      count: int
      first: int
      step: int
    sql:
      - WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < :count) INSERT INTO ids(job, tag, alarm) SELECT :job, :job || '-' || i, lunora_schedule(:first + i * :step, 'jobs:run', json_object('job', :job, 'tag', :job || '-' || i, 'due', :first + i * :step)) FROM k
  jobs:run:
    kind: mutation
    shard_by: job
    args:
      job: text
      tag: text
      fail_until: {type: int, default: 0}
      due: {type: int, default: 0}
    sql:
      - SELECT lunora_assert(lunora_attempt() > :fail_until, 'attempt ' || lunora_attempt() || ' fails')
      - INSERT INTO fired(job, tag, attempt, at, due) VALUES (:job, :tag, lunora_attempt(), lunora_now(), :due)
  jobs:cancel:
    kind: mutation
    shard_by: job
    args:
      job: text
      tag: text
    sql:
      - SELECT lunora_cancel((SELECT alarm FROM ids WHERE tag = :tag)) AS cancelled
  jobs:schedule_query:
    kind: query
    shard_by: job
    args:
      job: text
    sql:
      - SELECT lunora_schedule(10, 'jobs:run', json_object('job', :job, 'tag', 'q'))
  jobs:attempt:
    kind: mutation
    shard_by: job
    args:
      job: text
    sql:
      - SELECT lunora_attempt()
  jobs:bad:
    kind: mutation
    shard_by: job
    args:
      job: text
      fn: text
    sql:
      - SELECT lunora_schedule(10, :fn, json_object('job', :job, 'tag', 'x'))
  jobs:fired:
    kind: query
    shard_by: job
    args:
      job: text
    sql:
      - SELECT tag, attempt, at, due FROM fired ORDER BY tag
  other:run:
    kind: mutation
    shard_by: team
    args:
      team: text
    sql:
      - SELECT 1
`

func alarmApp(t testing.TB) *schema.App {
	t.Helper()
	app, err := schema.Parse("alarms.yaml", []byte(alarmYAML))
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func alarmConfig(t testing.TB, dir string) shardhost.Config {
	cfg := shardhost.DefaultLocalConfig()
	cfg.Dir = dir
	cfg.App = alarmApp(t)
	cfg.AlarmBackoff = 20 * time.Millisecond
	cfg.AlarmBackoffMax = 100 * time.Millisecond
	cfg.AlarmMaxAttempts = 3
	return cfg
}

func openAlarmHost(t testing.TB, cfg shardhost.Config) *shardhost.Host {
	t.Helper()
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, h) })
	return h
}

func shutdown(t testing.TB, h *shardhost.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

func addJob(h *shardhost.Host, job, tag string, when int64, extra map[string]any) (*api.Result, error) {
	args := map[string]any{"job": job, "tag": tag, "when": when}
	for k, v := range extra {
		args[k] = v
	}
	return h.Call(context.Background(), "job="+job, "jobs:add", args)
}

type firing struct {
	attempt, at, due int64
}

func fired(t testing.TB, h *shardhost.Host, job string) map[string]firing {
	t.Helper()
	res, err := h.Call(context.Background(), "job="+job, "jobs:fired", map[string]any{"job": job})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]firing{}
	for _, r := range res.Rows {
		out[r[0].(string)] = firing{r[1].(int64), r[2].(int64), r[3].(int64)}
	}
	return out
}

func adminRows(t testing.TB, h *shardhost.Host, shard, sql string) [][]any {
	t.Helper()
	res, err := h.Exec(context.Background(), shard, sql, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Rows
}

func TestAlarmFiresAndRollsBack(t *testing.T) {
	h := openAlarmHost(t, alarmConfig(t, t.TempDir()))
	start := time.Now().UnixMilli()
	res, err := addJob(h, "a", "t1", 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := res.Rows[0][0].(string)
	if !strings.HasPrefix(id, "al_") {
		t.Fatalf("lunora_schedule returned %v, want an alarm ID", res.Rows[0][0])
	}
	// A mutation that schedules and then fails leaves no alarm.
	if _, err := addJob(h, "a", "t2", 10, map[string]any{"then_fail": true}); !errors.Is(err, shardhost.ErrAssert) {
		t.Fatalf("failing mutation: %v", err)
	}
	rows := adminRows(t, h, "job=a", "SELECT id FROM __lunora_alarms")
	if len(rows) != 1 || rows[0][0] != id {
		t.Fatalf("pending alarms %v, want only %s", rows, id)
	}
	waitFor(t, 10*time.Second, func() error {
		if f := fired(t, h, "a"); len(f) != 1 {
			return fmt.Errorf("fired %v", f)
		}
		return nil
	})
	f := fired(t, h, "a")["t1"]
	if f.attempt != 1 || f.at < f.due || f.due < start+1000 {
		t.Fatalf("firing %+v: want attempt 1 at or after its due time", f)
	}
	if rows := adminRows(t, h, "job=a", "SELECT id FROM __lunora_alarms"); len(rows) != 0 {
		t.Fatalf("alarm row left after it fired: %v", rows)
	}
	// t2 never fires: its mutation rolled back.
	time.Sleep(100 * time.Millisecond)
	if f := fired(t, h, "a"); len(f) != 1 {
		t.Fatalf("fired %v, want only t1", f)
	}
	waitFor(t, 5*time.Second, func() error {
		if idx := h.AlarmIndex(); len(idx) != 0 {
			return fmt.Errorf("index %v", idx)
		}
		return nil
	})
}

func TestAlarmCancel(t *testing.T) {
	h := openAlarmHost(t, alarmConfig(t, t.TempDir()))
	if _, err := addJob(h, "c", "late", 3000, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := addJob(h, "c", "soon", 50, nil); err != nil {
		t.Fatal(err)
	}
	res, err := h.Call(context.Background(), "job=c", "jobs:cancel", map[string]any{"job": "c", "tag": "late"})
	if err != nil || res.Rows[0][0] != int64(1) {
		t.Fatalf("cancel: %v %v", res, err)
	}
	res, err = h.Call(context.Background(), "job=c", "jobs:cancel", map[string]any{"job": "c", "tag": "late"})
	if err != nil || res.Rows[0][0] != int64(0) {
		t.Fatalf("second cancel: %v %v, want 0", res, err)
	}
	waitFor(t, 10*time.Second, func() error {
		if f := fired(t, h, "c"); len(f) != 1 {
			return fmt.Errorf("fired %v", f)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	if f := fired(t, h, "c"); len(f) != 1 || f["soon"].attempt != 1 {
		t.Fatalf("fired %v, want only soon", f)
	}
}

func TestAlarmRefusals(t *testing.T) {
	h := openAlarmHost(t, alarmConfig(t, t.TempDir()))
	ctx := context.Background()
	_, err := h.Call(ctx, "job=q", "jobs:schedule_query", map[string]any{"job": "q"})
	if api.CodeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "scheduled by mutations on shards") {
		t.Fatalf("schedule in a query: %v", err)
	}
	if res, err := h.Call(ctx, "job=q", "jobs:attempt", map[string]any{"job": "q"}); err != nil || res.Rows[0][0] != int64(0) {
		t.Fatalf("lunora_attempt() in an ordinary call: %v %v, want 0", res, err)
	}
	for fn, want := range map[string]string{
		"nope:x":     "not declared",
		"jobs:fired": "is a query",
		"other:run":  "runs on team shards",
	} {
		_, err := h.Call(ctx, "job=b", "jobs:bad", map[string]any{"job": "b", "fn": fn})
		if api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), want) {
			t.Errorf("schedule %s: %v, want INVALID_ARGUMENT with %q", fn, err, want)
		}
	}
	// The alarm tables are readable by admin SQL, never writable.
	for _, sql := range []string{
		"INSERT INTO __lunora_alarms(id, due_ms, function, args, attempt, created_ms) VALUES ('x', 0, 'jobs:run', '{}', 0, 0)",
		"DELETE FROM __lunora_alarms",
		"UPDATE __lunora_dead_alarms SET attempts = 0",
	} {
		if _, err := h.Exec(ctx, "job=b", sql, nil); !errors.Is(err, shardhost.ErrSandbox) {
			t.Errorf("%s: %v, want the sandbox's refusal", sql, err)
		}
	}
	if rows := adminRows(t, h, "job=b", "SELECT count(*) FROM __lunora_alarms"); rows[0][0] != int64(0) {
		t.Fatalf("alarms after refusals: %v", rows)
	}
}

func TestAlarmRetriesAndDeadLetter(t *testing.T) {
	h := openAlarmHost(t, alarmConfig(t, t.TempDir())) // 3 attempts
	if _, err := addJob(h, "r", "ok3", 0, map[string]any{"fail_until": int64(2)}); err != nil {
		t.Fatal(err)
	}
	if _, err := addJob(h, "r", "dead", 0, map[string]any{"fail_until": int64(5)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		dead := adminRows(t, h, "job=r", "SELECT function, attempts, error FROM __lunora_dead_alarms")
		if len(fired(t, h, "r")) != 1 || len(dead) != 1 {
			return fmt.Errorf("fired %v, dead %v", fired(t, h, "r"), dead)
		}
		return nil
	})
	if f := fired(t, h, "r")["ok3"]; f.attempt != 3 {
		t.Fatalf("ok3 fired at attempt %d, want 3", f.attempt)
	}
	dead := adminRows(t, h, "job=r", "SELECT function, attempts, error FROM __lunora_dead_alarms")
	if dead[0][0] != "jobs:run" || dead[0][1] != int64(3) || !strings.Contains(dead[0][2].(string), "attempt 3 fails") {
		t.Fatalf("dead alarm %v", dead)
	}
	if rows := adminRows(t, h, "job=r", "SELECT id FROM __lunora_alarms"); len(rows) != 0 {
		t.Fatalf("pending after dead-lettering: %v", rows)
	}
}

func TestAlarmWakesHibernatedShard(t *testing.T) {
	cfg := alarmConfig(t, t.TempDir())
	cfg.IdleTimeout = 20 * time.Millisecond
	h := openAlarmHost(t, cfg)
	if _, err := addJob(h, "h", "t", 600, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		st, _ := h.Status(context.Background())
		if st.ActiveShards != 0 {
			return fmt.Errorf("%d shards active", st.ActiveShards)
		}
		return nil
	})
	waitFor(t, 10*time.Second, func() error {
		if idx := h.AlarmIndex(); len(idx) != 0 {
			return fmt.Errorf("index %v", idx)
		}
		return nil
	})
	if f := fired(t, h, "h"); len(f) != 1 {
		t.Fatalf("fired %v", f)
	}
}

func TestAlarmSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := alarmConfig(t, dir)
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := addJob(h, fmt.Sprint("s", i), "t", 400, nil); err != nil {
			t.Fatal(err)
		}
	}
	shutdown(t, h)
	cfg.DeferAlarms = true // look at the index before anything fires
	h = openAlarmHost(t, cfg)
	if len(h.AlarmIndex()) != 5 {
		t.Fatalf("index after restart: %v", h.AlarmIndex())
	}
	h.StartAlarms()
	waitFor(t, 10*time.Second, func() error {
		for i := range 5 {
			if f := fired(t, h, fmt.Sprint("s", i)); len(f) != 1 {
				return fmt.Errorf("s%d fired %v", i, f)
			}
		}
		return nil
	})
}

// TestAlarmIndexCrashPoints: the index is a hint. Entries with no alarm
// behind them (a crash after the index write, before the shard's commit)
// fire nothing, create no shard and go; alarms with no index at all
// (alarms.db lost) are found by the rebuild at start.
func TestAlarmIndexCrashPoints(t *testing.T) {
	dir := t.TempDir()
	cfg := alarmConfig(t, dir)
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := addJob(h, "sp", "never", 10, map[string]any{"then_fail": true}); err == nil {
		t.Fatal("want the failure")
	}
	for i := range 3 {
		if _, err := addJob(h, fmt.Sprint("lost", i), "t", 300, nil); err != nil {
			t.Fatal(err)
		}
	}
	shutdown(t, h)

	// Crash point 1: index entries written, shard commits lost.
	idx, err := sqlitex.Open(filepath.Join(dir, "alarms.db"), sqlitex.Options{Synchronous: "FULL", CacheKiB: 64, MaxSQLLen: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for _, shard := range []string{"job=sp", "job=ghost"} {
		if _, err := idx.Exec(context.Background(), "INSERT OR REPLACE INTO alarm_due(shard, due_ms) VALUES (?, ?)",
			driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: now}); err != nil {
			t.Fatal(err)
		}
	}
	idx.Close()
	cfg.DeferAlarms = true // look at the index before anything fires
	h, err = shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if idx := h.AlarmIndex(); len(idx) != 5 {
		t.Fatalf("index %v, want 5 entries", idx)
	}
	h.StartAlarms()
	waitFor(t, 10*time.Second, func() error {
		idx := h.AlarmIndex()
		if _, ok := idx["job=sp"]; ok {
			return fmt.Errorf("index %v", idx)
		}
		if _, ok := idx["job=ghost"]; ok {
			return fmt.Errorf("index %v", idx)
		}
		return nil
	})
	if st, _ := h.Status(context.Background()); st.ShardsOnDisk != 4 {
		t.Fatalf("%d shards on disk, want 4: a spurious entry created a shard", st.ShardsOnDisk)
	}
	shutdown(t, h)

	// Crash point 2: the shards committed, the index never learned of it.
	for _, p := range []string{"alarms.db", "alarms.db-wal", "alarms.db-shm"} {
		os.Remove(filepath.Join(dir, p))
	}
	h = openAlarmHost(t, cfg)
	if idx := h.AlarmIndex(); len(idx) != 3 {
		t.Fatalf("rebuilt index %v, want the 3 shards with alarms", idx)
	}
	h.StartAlarms()
	waitFor(t, 10*time.Second, func() error {
		for i := range 3 {
			if f := fired(t, h, fmt.Sprint("lost", i)); len(f) != 1 {
				return fmt.Errorf("lost%d fired %v", i, f)
			}
		}
		if idx := h.AlarmIndex(); len(idx) != 0 {
			return fmt.Errorf("index %v", idx)
		}
		return nil
	})
	if f := fired(t, h, "sp"); len(f) != 0 {
		t.Fatalf("rolled-back alarm fired: %v", f)
	}
}

// TestAlarmMovesWithAHandoff: the alarm rows travel in the shard's file;
// the receiver indexes them on install and fires them, the sender drops
// its entry and never fires them.
func TestAlarmMovesWithAHandoff(t *testing.T) {
	ctx := context.Background()
	cfgA, cfgB := alarmConfig(t, t.TempDir()), alarmConfig(t, t.TempDir())
	cfgA.NodeID, cfgB.NodeID = "a", "b"
	a, b := openAlarmHost(t, cfgA), openAlarmHost(t, cfgB)
	for i := range 3 {
		if _, err := addJob(a, "m", fmt.Sprint("t", i), 3000, nil); err != nil {
			t.Fatal(err)
		}
	}
	f := copyShard(t, ctx, a, b, "job=m")
	if _, ok := b.AlarmIndex()["job=m"]; !ok {
		t.Fatalf("receiver's index after the install: %v", b.AlarmIndex())
	}
	if err := a.Drop(f, "b"); err != nil {
		t.Fatal(err)
	}
	if idx := a.AlarmIndex(); len(idx) != 0 {
		t.Fatalf("sender's index after the drop: %v", idx)
	}
	waitFor(t, 10*time.Second, func() error {
		if f := fired(t, b, "m"); len(f) != 3 {
			return fmt.Errorf("fired on b: %v", f)
		}
		return nil
	})
	for tag, f := range fired(t, b, "m") {
		if f.attempt != 1 {
			t.Errorf("%s fired at attempt %d", tag, f.attempt)
		}
	}
}

// copyShard freezes shard id on a, streams its file to b and installs it
// there, as a handoff does before its commit; the caller drops a's copy.
func copyShard(t *testing.T, ctx context.Context, a, b *shardhost.Host, id string) *shardhost.Frozen {
	t.Helper()
	f, err := a.Freeze(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	file, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	err = b.Receive(ctx, f.ShardID, file, f.Size, f.SHA256[:])
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Install(id); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestChatReminder: the chat example's rooms:remind posts its message
// through an alarm.
func TestChatReminder(t *testing.T) {
	h := newHost(t, nil)
	res, err := h.Call(context.Background(), "room_id=rem", "rooms:remind", map[string]any{"room_id": "rem", "body": "stand-up", "delay_ms": int64(50)})
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := res.Rows[0][0].(string); !strings.HasPrefix(id, "al_") {
		t.Fatalf("rooms:remind returned %v", res.Rows)
	}
	waitFor(t, 10*time.Second, func() error {
		if n := count(t, h, "rem"); n != 1 {
			return fmt.Errorf("%d messages", n)
		}
		return nil
	})
	rows := adminRows(t, h, "room_id=rem", "SELECT author, body FROM messages")
	if rows[0][0] != "reminder" || rows[0][1] != "stand-up" {
		t.Fatalf("reminder message %v", rows)
	}
}
