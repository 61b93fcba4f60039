package shardhost

import (
	"container/heap"
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// Alarms (ARCHITECTURE.md §8). A shard's pending alarms are rows of its own
// file (__lunora_alarms), written by lunora_schedule inside the mutation's
// transaction; its dead alarms are rows of __lunora_dead_alarms. The shard
// file is the truth. The node keeps a durable hint of when each shard's
// next alarm is due (Dir/alarms.db, shard → due_ms), so it never opens
// every shard to find them:
//
//   - before a commit that schedules an alarm earlier than the shard's
//     entry, the entry is lowered (durably): a crash after it and before
//     the commit leaves an early entry, and firing then finds nothing due
//     and recomputes the entry;
//   - after every commit that touched the shard's alarms, and whenever a
//     shard activates or is installed, the entry is recomputed from the
//     shard's file (raised, lowered or removed);
//   - a missing alarms.db is rebuilt at start by reading every shard file
//     once.
//
// A scheduler goroutine sleeps until the earliest entry, activates the
// shard (which may be hibernated) and runs its due alarms through the
// shard's writer: each alarm's function runs as a mutation and its row is
// deleted in the same transaction (at least once: a crash before the
// commit runs it again, one after never). A failed run is retried with
// exponential back-off up to AlarmMaxAttempts, then moved to
// __lunora_dead_alarms.

const alarmsDDL = `CREATE TABLE IF NOT EXISTS __lunora_alarms (id TEXT PRIMARY KEY, due_ms INTEGER NOT NULL, function TEXT NOT NULL, args TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS __lunora_alarms_due ON __lunora_alarms(due_ms);
CREATE TABLE IF NOT EXISTS __lunora_dead_alarms (id TEXT PRIMARY KEY, due_ms INTEGER NOT NULL, function TEXT NOT NULL, args TEXT NOT NULL, attempts INTEGER NOT NULL, created_ms INTEGER NOT NULL, dead_ms INTEGER NOT NULL, error TEXT NOT NULL) WITHOUT ROWID`

// absoluteAlarmMS: a lunora_schedule time at or above it is a Unix time in
// milliseconds (2001-09-09), below it a delay.
const absoluteAlarmMS = 1_000_000_000_000

// alarmsPerRound bounds the alarms one firing runs in one transaction; the
// rest are due at once and run in the next round.
const alarmsPerRound = 64

// alarmFireConcurrency bounds the shards being fired at once.
const alarmFireConcurrency = 64

// alarmSched is the writer's sqlitex.Scheduler: it runs on the writer
// goroutine, inside the mutation's statement.
type alarmSched struct {
	a *actor
	// lowest is the earliest due time scheduled since the last commit
	// (0: none); touched is set by any schedule or cancel.
	lowest  int64
	touched bool
	// q is what the transaction did to the shard's queues (queues.go).
	q queueTxn
}

func newAlarmID() string {
	var b [12]byte
	rand.Read(b[:])
	return "al_" + hex.EncodeToString(b[:])
}

func (s *alarmSched) Schedule(when int64, function, argsJSON string) (string, error) {
	a := s.a
	if when < 0 {
		return "", api.Errorf(codes.InvalidArgument, "lunora_schedule: when must be a delay in ms or a Unix time in ms, not %d", when)
	}
	now := a.w.Now
	if now.IsZero() {
		now = time.Now()
	}
	due := when
	if when < absoluteAlarmMS {
		due = now.UnixMilli() + when
	}
	fn := a.h.cfg.App.Function(function)
	switch {
	case fn == nil:
		return "", api.Errorf(codes.InvalidArgument, "lunora_schedule: function %q is not declared in lunora.yaml", function)
	case fn.Kind != schema.Mutation:
		return "", api.Errorf(codes.InvalidArgument, "lunora_schedule: function %s is a %s; an alarm runs a mutation", fn.Name, fn.Kind)
	case fn.ShardBy != a.group:
		return "", api.Errorf(codes.InvalidArgument, "lunora_schedule: function %s runs on %s shards, an alarm runs on its own shard (%s)", fn.Name, fn.ShardBy, a.id)
	}
	args, err := decodeAlarmArgs(argsJSON)
	if err != nil {
		return "", api.Errorf(codes.InvalidArgument, "lunora_schedule: args must be a JSON object: %v", err)
	}
	if _, _, _, _, err := a.h.bindCall(fn, a.id, args); err != nil {
		return "", api.Errorf(codes.InvalidArgument, "lunora_schedule: %v", err.Error())
	}
	if argsJSON == "" {
		argsJSON = "{}"
	}
	id := newAlarmID()
	if _, err := a.w.ExecSys("INSERT INTO __lunora_alarms(id, due_ms, function, args, attempt, created_ms) VALUES (?, ?, ?, ?, 0, ?)",
		driver.NamedValue{Ordinal: 1, Value: id}, driver.NamedValue{Ordinal: 2, Value: due},
		driver.NamedValue{Ordinal: 3, Value: fn.Name}, driver.NamedValue{Ordinal: 4, Value: argsJSON},
		driver.NamedValue{Ordinal: 5, Value: now.UnixMilli()}); err != nil {
		return "", api.Errorf(codes.Internal, "lunora_schedule: record the alarm: %v", err)
	}
	s.touched = true
	if s.lowest == 0 || due < s.lowest {
		s.lowest = due
	}
	return id, nil
}

func (s *alarmSched) Cancel(id string) (bool, error) {
	n, err := s.a.w.ExecSys("DELETE FROM __lunora_alarms WHERE id = ?", driver.NamedValue{Ordinal: 1, Value: id})
	if err != nil {
		return false, api.Errorf(codes.Internal, "lunora_cancel: %v", err)
	}
	s.touched = true
	return n > 0, nil
}

func decodeAlarmArgs(s string) (map[string]any, error) {
	if strings.TrimSpace(s) == "" {
		return map[string]any{}, nil
	}
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("null")
	}
	return m, nil
}

// alarmsBeforeCommit lowers the shard's index entry to the earliest alarm
// scheduled in the transaction about to commit, durably, before the
// commit: an error fails the commit.
func (a *actor) alarmsBeforeCommit() error {
	if a.sched.lowest == 0 {
		return nil
	}
	return a.h.alarms.lower(a.id, a.sched.lowest)
}

// alarmsAfterCommit recomputes the shard's index entry from its file when
// the transaction that just ended (committed or not) touched its alarms.
func (a *actor) alarmsAfterCommit() {
	if !a.sched.touched {
		a.sched.lowest = 0
		return
	}
	a.sched.touched, a.sched.lowest = false, 0
	a.reindexAlarms()
}

// reindexAlarms sets the shard's index entry to its earliest pending
// alarm, read from the writer connection outside a transaction.
func (a *actor) reindexAlarms() {
	due, ok, err := minDue(a.w)
	if err != nil {
		a.h.log.Warn("read the shard's next alarm", "shard", a.id, "err", err)
		return
	}
	if err := a.h.alarms.set(a.id, due, ok); err != nil {
		a.h.log.Warn("update the alarm index", "shard", a.id, "err", err)
	}
}

func minDue(c *sqlitex.Conn) (int64, bool, error) {
	_, rows, err := c.QueryRows(context.Background(), "SELECT min(due_ms) FROM __lunora_alarms", nil, sqlitex.Limits{MaxRows: 1, MaxBytes: 64})
	if err != nil {
		return 0, false, err
	}
	if len(rows) != 1 || rows[0][0] == nil {
		return 0, false, nil
	}
	return asInt(rows[0][0]), true, nil
}

// fileIndex is what the node's index needs of a shard file: its ID, its
// earliest alarm, and its queues' depths and dead-letter counts.
type fileIndex struct {
	id     string
	due    int64
	hasDue bool
	ready  map[string]int64
	dead   map[string]int64
}

// readFileIndex reads the shard file at path for the node's index,
// without serving it.
func readFileIndex(path string) (fi fileIndex, err error) {
	c, err := sqlitex.Open(path, sqlitex.Options{Synchronous: "FULL", CacheKiB: 64, ReadOnly: true, MaxSQLLen: 1 << 10})
	if err != nil {
		return fi, err
	}
	defer c.Close()
	ctx := context.Background()
	_, rows, err := c.QueryRows(ctx, "SELECT v FROM __lunora_meta WHERE k = 'shard_id'", nil, sqlitex.Limits{MaxRows: 1, MaxBytes: 1 << 12})
	if err != nil {
		return fi, err
	}
	if len(rows) == 1 {
		fi.id, _ = rows[0][0].(string)
	}
	_, rows, err = c.QueryRows(ctx, "SELECT name FROM sqlite_schema WHERE name IN ('__lunora_alarms', '__lunora_outbox', '__lunora_dead_messages')", nil, sqlitex.Limits{MaxRows: 3, MaxBytes: 1 << 10})
	if err != nil {
		return fi, err
	}
	has := map[string]bool{}
	for _, r := range rows {
		has[r[0].(string)] = true
	}
	if has["__lunora_alarms"] {
		if fi.due, fi.hasDue, err = minDue(c); err != nil {
			return fi, err
		}
	}
	if has["__lunora_outbox"] {
		if fi.ready, err = countByQueue(c, "__lunora_outbox"); err != nil {
			return fi, err
		}
	}
	if has["__lunora_dead_messages"] {
		if fi.dead, err = countByQueue(c, "__lunora_dead_messages"); err != nil {
			return fi, err
		}
	}
	return fi, nil
}

func countByQueue(c *sqlitex.Conn, table string) (map[string]int64, error) {
	_, rows, err := c.QueryRows(context.Background(), "SELECT queue, count(*) FROM "+table+" GROUP BY queue", nil, sqlitex.Limits{MaxRows: 1 << 20, MaxBytes: 1 << 30})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r[0].(string)] = asInt(r[1])
	}
	return out, nil
}

// alarmRow is one pending alarm as the writer fires it.
type alarmRow struct {
	id, function, args string
	due, attempt       int64
	created            int64
}

// backoff is the delay before attempt n+1 after n failed attempts.
func (h *Host) alarmBackoff(failed int64) time.Duration {
	d := h.cfg.AlarmBackoff
	for i := int64(1); i < failed && d < h.cfg.AlarmBackoffMax; i++ {
		d *= 2
	}
	return min(d, h.cfg.AlarmBackoffMax)
}

// fireAlarms runs the shard's due alarms on the writer goroutine, in their
// own transaction: each alarm's function in a savepoint, its row deleted
// with the function's writes; a failure is recorded (retry or dead) in
// place of them.
func (a *actor) fireAlarms() {
	now := a.h.cfg.Now()
	startSeq := a.seq
	if _, err := a.w.ExecSys("BEGIN IMMEDIATE"); err != nil {
		a.h.log.Warn("fire alarms: begin", "shard", a.id, "err", err)
		a.reindexAlarms()
		return
	}
	a.w.ResetWritten()
	_, rows, err := a.w.QueryRows(context.Background(), "SELECT id, due_ms, function, args, attempt, created_ms FROM __lunora_alarms WHERE due_ms <= ? ORDER BY due_ms LIMIT ?",
		[]driver.NamedValue{{Ordinal: 1, Value: now.UnixMilli()}, {Ordinal: 2, Value: int64(alarmsPerRound)}}, sqlitex.Limits{MaxRows: alarmsPerRound, MaxBytes: 64 << 20})
	if err != nil {
		a.w.ExecSys("ROLLBACK")
		a.h.log.Warn("fire alarms: read", "shard", a.id, "err", err)
		a.reindexAlarms()
		return
	}
	a.sched.touched = true
	for _, r := range rows {
		al := alarmRow{id: r[0].(string), due: asInt(r[1]), function: r[2].(string), args: r[3].(string), attempt: asInt(r[4]), created: asInt(r[5])}
		a.w.ExecSys("SAVEPOINT m")
		dirty, err := a.runAlarm(al)
		if err == nil {
			if _, err = a.w.ExecSys("DELETE FROM __lunora_alarms WHERE id = ?", driver.NamedValue{Ordinal: 1, Value: al.id}); err == nil {
				a.w.ExecSys("RELEASE m")
				if dirty {
					a.seq++
				}
				a.h.m.alarmsFired.WithLabelValues("ok").Inc()
				continue
			}
		}
		abandoned := a.w.C.AutoCommit()
		if abandoned {
			// SQLite ended the transaction: what ran before in it is
			// gone, alarms included (they run again next round).
			a.seq = startSeq
			if _, berr := a.w.ExecSys("BEGIN IMMEDIATE"); berr != nil {
				a.h.log.Warn("fire alarms: begin", "shard", a.id, "err", berr)
				a.reindexAlarms()
				return
			}
		} else {
			a.w.ExecSys("ROLLBACK TO m")
			a.w.ExecSys("RELEASE m")
		}
		if ferr := a.alarmFailed(al, now, err); ferr != nil {
			a.h.log.Warn("fire alarms: record a failure", "shard", a.id, "alarm", al.id, "err", ferr)
		}
		if abandoned {
			break
		}
	}
	if err := a.commit(startSeq); err != nil {
		a.w.ExecSys("ROLLBACK")
		a.seq = startSeq
		a.h.log.Warn("fire alarms: commit", "shard", a.id, "err", err)
	} else {
		a.noteCommit(startSeq+1, a.seq)
		// The alarm and queue indexes follow the commit once it is
		// durable.
		a.syncNow()
	}
	a.alarmsAfterCommit()
	a.queuesAfterCommit()
}

// runAlarm runs an alarm's function as a mutation with no caller.
func (a *actor) runAlarm(al alarmRow) (bool, error) {
	fn := a.h.cfg.App.Function(al.function)
	if fn == nil || fn.Kind != schema.Mutation {
		return false, api.Errorf(codes.FailedPrecondition, "function %s is no longer a mutation in lunora.yaml", al.function)
	}
	args, err := decodeAlarmArgs(al.args)
	if err != nil {
		return false, api.Errorf(codes.InvalidArgument, "alarm args: %v", err)
	}
	_, _, _, bound, err := a.h.bindCall(fn, a.id, args)
	if err != nil {
		return false, err
	}
	m := &mutation{ctx: context.Background(), sql: fn.SQL, args: namedArgs(bound), attempt: al.attempt + 1}
	_, dirty, err := a.run(m)
	a.h.budget.Release(m.held)
	return dirty, err
}

// alarmFailed records a failed attempt: the alarm is due again after the
// back-off, or dead once it has used its attempts.
func (a *actor) alarmFailed(al alarmRow, now time.Time, cause error) error {
	attempts := al.attempt + 1
	if attempts >= int64(a.h.cfg.AlarmMaxAttempts) {
		a.h.m.alarmsFired.WithLabelValues("dead").Inc()
		if _, err := a.w.ExecSys("INSERT OR REPLACE INTO __lunora_dead_alarms(id, due_ms, function, args, attempts, created_ms, dead_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			driver.NamedValue{Ordinal: 1, Value: al.id}, driver.NamedValue{Ordinal: 2, Value: al.due},
			driver.NamedValue{Ordinal: 3, Value: al.function}, driver.NamedValue{Ordinal: 4, Value: al.args},
			driver.NamedValue{Ordinal: 5, Value: attempts}, driver.NamedValue{Ordinal: 6, Value: al.created},
			driver.NamedValue{Ordinal: 7, Value: now.UnixMilli()}, driver.NamedValue{Ordinal: 8, Value: cause.Error()}); err != nil {
			return err
		}
		_, err := a.w.ExecSys("DELETE FROM __lunora_alarms WHERE id = ?", driver.NamedValue{Ordinal: 1, Value: al.id})
		return err
	}
	a.h.m.alarmsFired.WithLabelValues("retry").Inc()
	due := now.Add(a.h.alarmBackoff(attempts)).UnixMilli()
	_, err := a.w.ExecSys("UPDATE __lunora_alarms SET attempt = ?, due_ms = ? WHERE id = ?",
		driver.NamedValue{Ordinal: 1, Value: attempts}, driver.NamedValue{Ordinal: 2, Value: due}, driver.NamedValue{Ordinal: 3, Value: al.id})
	return err
}

// alarmIndex is the node's durable hint of each shard's next due alarm,
// with its in-memory copy ordered by due time for the scheduler.
type alarmIndex struct {
	mu     sync.Mutex
	db     *sqlitex.Conn
	stored map[string]int64 // the durable entries
	due    map[string]int64 // the entries the scheduler has yet to fire
	q      dueHeap          // entries by due time; stale ones are skipped
	wake   chan struct{}
	queues queueIndex // queueindex.go
}

type dueEntry struct {
	shard string
	due   int64
}

type dueHeap []dueEntry

func (q dueHeap) Len() int           { return len(q) }
func (q dueHeap) Less(i, j int) bool { return q[i].due < q[j].due }
func (q dueHeap) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueHeap) Push(x any)        { *q = append(*q, x.(dueEntry)) }
func (q *dueHeap) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

const alarmIndexDDL = `CREATE TABLE IF NOT EXISTS alarm_due (shard TEXT PRIMARY KEY, due_ms INTEGER NOT NULL) WITHOUT ROWID`

// The index is written with synchronous=NORMAL — a write survives a
// process crash but may not survive a power loss — except when an entry
// is lowered: lower switches to FULL for that write, which also syncs
// everything written before it. Only a lowered entry must never be lost
// (it announces an alarm the shard is about to commit); a lost raise or
// removal leaves an entry that is early, which is harmless.
func alarmIndexOptions() sqlitex.Options {
	return sqlitex.Options{Synchronous: "NORMAL", CacheKiB: 512, MaxSQLLen: 1 << 12}
}

// openAlarmIndex opens Dir/alarms.db, building it from the shard files
// first if it is absent (a new node, or one whose index was deleted).
func (h *Host) openAlarmIndex() (*alarmIndex, error) {
	path := filepath.Join(h.cfg.Dir, "alarms.db")
	if !hasFile(path) {
		if err := h.rebuildAlarmIndex(path); err != nil {
			return nil, err
		}
	}
	db, err := sqlitex.Open(path, alarmIndexOptions())
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec(context.Background(), alarmIndexDDL); err != nil {
		db.Close()
		return nil, err
	}
	_, rows, err := db.QueryRows(context.Background(), "SELECT shard, due_ms FROM alarm_due", nil, sqlitex.Limits{MaxRows: 1 << 30, MaxBytes: 1 << 40})
	if err != nil {
		db.Close()
		return nil, err
	}
	x := &alarmIndex{db: db, stored: make(map[string]int64, len(rows)), due: make(map[string]int64, len(rows)), wake: make(chan struct{}, 1)}
	for _, r := range rows {
		id, due := r[0].(string), asInt(r[1])
		x.stored[id], x.due[id] = due, due
		x.q = append(x.q, dueEntry{id, due})
	}
	heap.Init(&x.q)
	if err := x.loadQueues(); err != nil {
		db.Close()
		return nil, err
	}
	return x, nil
}

// rebuildAlarmIndex reads every shard file once and writes the index to a
// temporary file renamed into place, so that a crash during the rebuild
// leaves no partial index (the next start rebuilds again).
func (h *Host) rebuildAlarmIndex(path string) error {
	tmp := path + ".rebuild"
	for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		os.Remove(p)
	}
	db, err := sqlitex.Open(tmp, alarmIndexOptions())
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := db.Exec(ctx, alarmIndexDDL+";\n"+queueIndexDDL); err != nil {
		db.Close()
		return err
	}
	n := 0
	root := filepath.Join(h.cfg.Dir, "shards")
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".db") {
			return nil
		}
		fi, err := readFileIndex(p)
		if err != nil {
			return fmt.Errorf("read alarms and queues of %s: %w", p, err)
		}
		if fi.id == "" {
			return nil
		}
		if fi.hasDue {
			n++
			if _, err = db.Exec(ctx, "INSERT OR REPLACE INTO alarm_due(shard, due_ms) VALUES (?, ?)", driver.NamedValue{Ordinal: 1, Value: fi.id}, driver.NamedValue{Ordinal: 2, Value: fi.due}); err != nil {
				return err
			}
		}
		for q, depth := range fi.ready {
			if _, err = db.Exec(ctx, "INSERT OR REPLACE INTO queue_ready(shard, queue, depth) VALUES (?, ?, ?)", driver.NamedValue{Ordinal: 1, Value: fi.id}, driver.NamedValue{Ordinal: 2, Value: q}, driver.NamedValue{Ordinal: 3, Value: depth}); err != nil {
				return err
			}
		}
		for q, count := range fi.dead {
			if _, err = db.Exec(ctx, "INSERT OR REPLACE INTO queue_dead(shard, queue, count) VALUES (?, ?, ?)", driver.NamedValue{Ordinal: 1, Value: fi.id}, driver.NamedValue{Ordinal: 2, Value: q}, driver.NamedValue{Ordinal: 3, Value: count}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		_, err = db.Exec(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if err := syncDirs(h.cfg.Dir, h.cfg.Dir); err != nil {
		return err
	}
	h.log.Info("rebuilt the alarm index from the shard files", "shards_with_alarms", n)
	return nil
}

func (x *alarmIndex) signal() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

func (x *alarmIndex) write(shard string, due int64) error {
	_, err := x.db.ExecSys("INSERT OR REPLACE INTO alarm_due(shard, due_ms) VALUES (?, ?)", driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: due})
	return err
}

// lower makes the shard's entry due no later than due.
func (x *alarmIndex) lower(shard string, due int64) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if cur, ok := x.stored[shard]; ok && cur <= due {
		return nil
	}
	if _, err := x.db.ExecSys("PRAGMA synchronous=FULL"); err != nil {
		return err
	}
	err := x.write(shard, due)
	if _, perr := x.db.ExecSys("PRAGMA synchronous=NORMAL"); err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	x.stored[shard] = due
	x.schedule(shard, due)
	return nil
}

// schedule makes the scheduler fire shard at due (in memory).
func (x *alarmIndex) schedule(shard string, due int64) {
	if cur, ok := x.due[shard]; ok && cur == due {
		return
	}
	x.due[shard] = due
	heap.Push(&x.q, dueEntry{shard, due})
	x.signal()
}

// set makes the shard's entry due (or removes it when !ok).
func (x *alarmIndex) set(shard string, due int64, ok bool) error {
	if !ok {
		return x.remove(shard)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if cur, has := x.stored[shard]; !has || cur != due {
		if err := x.write(shard, due); err != nil {
			return err
		}
		x.stored[shard] = due
	}
	x.schedule(shard, due)
	return nil
}

func (x *alarmIndex) remove(shard string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.due, shard)
	if _, ok := x.stored[shard]; !ok {
		return nil
	}
	delete(x.stored, shard)
	_, err := x.db.ExecSys("DELETE FROM alarm_due WHERE shard = ?", driver.NamedValue{Ordinal: 1, Value: shard})
	return err
}

// retry keeps the shard's durable entry and makes the scheduler try it
// again at due (in memory only).
func (x *alarmIndex) retry(shard string, due int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.due[shard]; ok {
		return // re-indexed meanwhile
	}
	x.schedule(shard, due)
}

// takeDue removes from memory and returns the shards due at now, and the
// next due time after them (0: none).
func (x *alarmIndex) takeDue(now int64) ([]string, int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	for x.q.Len() > 0 {
		e := x.q[0]
		if cur, ok := x.due[e.shard]; !ok || cur != e.due {
			heap.Pop(&x.q) // stale
			continue
		}
		if e.due > now {
			return out, e.due
		}
		heap.Pop(&x.q)
		delete(x.due, e.shard)
		out = append(out, e.shard)
	}
	return out, 0
}

// AlarmIndex returns a copy of the node's alarm index (shard → earliest
// due time, Unix ms) as stored; for tests and diagnostics.
func (h *Host) AlarmIndex() map[string]int64 {
	h.alarms.mu.Lock()
	defer h.alarms.mu.Unlock()
	out := make(map[string]int64, len(h.alarms.stored))
	for k, v := range h.alarms.stored {
		out[k] = v
	}
	return out
}

func (x *alarmIndex) close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.db.Close()
}

// StartAlarms starts the alarm scheduler (once; New does unless
// Config.DeferAlarms). After Shutdown it does nothing.
func (h *Host) StartAlarms() {
	h.alarmsOnce.Do(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.closed {
			return
		}
		h.janitor.Add(1)
		go h.runAlarms()
	})
}

// runAlarms is the scheduler: it sleeps until the earliest index entry and
// fires the shards that are due.
func (h *Host) runAlarms() {
	defer h.janitor.Done()
	sem := make(chan struct{}, alarmFireConcurrency)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := h.cfg.Now().UnixMilli()
		shards, next := h.alarms.takeDue(now)
		for _, id := range shards {
			select {
			case sem <- struct{}{}:
			case <-h.stop:
				return
			}
			h.janitor.Add(1)
			go func() {
				defer h.janitor.Done()
				defer func() { <-sem }()
				h.fireShard(id)
			}()
		}
		wait := time.Hour
		if next != 0 {
			wait = time.Duration(next-h.cfg.Now().UnixMilli()) * time.Millisecond
		}
		timer.Reset(max(wait, 0))
		select {
		case <-h.stop:
			return
		case <-h.alarms.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// fireShard activates a shard and has its writer run its due alarms. A
// shard whose file is not here (dropped, moved away) is dropped from the
// index, never created.
func (h *Host) fireShard(id string) {
	retry := func() { h.alarms.retry(id, h.cfg.Now().Add(time.Second).UnixMilli()) }
	group, key, err := h.cfg.App.ParseShardID(id)
	if err != nil || group == schema.GlobalGroup {
		h.alarms.remove(id)
		return
	}
	h.mu.Lock()
	_, active := h.actors[id]
	h.mu.Unlock()
	if !active && !hasFile(h.shardPath(id)) && !hasFile(h.shardPath(id)+".incoming") {
		h.alarms.remove(id)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = h.withShard(ctx, id, group, key, func(a *actor) error {
		m := &mutation{ctx: ctx, fire: true, done: make(chan struct{})}
		if err := a.mailbox.offer(m, a.id); err != nil {
			return err
		}
		select {
		case <-m.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	switch {
	case err == nil:
	case errors.Is(err, ErrShardElsewhere):
		h.alarms.remove(id)
	case errors.Is(err, ErrClosed):
	default:
		h.log.Warn("fire alarms", "shard", id, "err", err)
		retry()
	}
}

// indexIncoming makes the node's index cover the incoming copy of a shard
// at path: its entry lowered to the copy's earliest alarm, and hints for
// its queues' messages and dead letters.
func (h *Host) indexIncoming(shardID, path string) error {
	fi, err := readFileIndex(path)
	for _, p := range []string{path + "-wal", path + "-shm"} {
		os.Remove(p)
	}
	if err != nil {
		return err
	}
	for q := range fi.ready {
		if err := h.alarms.announceReady(shardID, q); err != nil {
			return err
		}
	}
	for q := range fi.dead {
		if err := h.alarms.announceDead(shardID, q); err != nil {
			return err
		}
	}
	if !fi.hasDue {
		return nil
	}
	return h.alarms.lower(shardID, fi.due)
}
