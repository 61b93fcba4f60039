package shardhost

import (
	"context"
	"database/sql/driver"
	"sort"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"github.com/prometheus/client_golang/prometheus"
)

// The queue part of the node's index (Dir/alarms.db, queues.go): which
// shards have messages, and dead letters, for which queue.

const queueIndexDDL = `CREATE TABLE IF NOT EXISTS queue_ready (shard TEXT NOT NULL, queue TEXT NOT NULL, depth INTEGER NOT NULL, PRIMARY KEY (shard, queue)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_dead (shard TEXT NOT NULL, queue TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (shard, queue)) WITHOUT ROWID`

type shardQueue struct{ shard, queue string }

// readyEntry is what the node knows of one (shard, queue) outbox.
type readyEntry struct {
	queueState
	known bool // state read from the shard since start (else: only the hint)
	busy  bool // a Receive is leasing from it
}

// queueIndex is guarded by alarmIndex.mu; its durable rows live in the
// same database as the alarm index.
type queueIndex struct {
	// stored are the durable ready hints (their depth as last written);
	// storedDead the durable dead-letter hints.
	stored     map[shardQueue]int64
	storedDead map[shardQueue]int64
	ready      map[string]map[string]*readyEntry // queue → shard →
	dead       map[string]map[string]int64       // queue → shard → count
	changed    map[string]chan struct{}          // queue → closed on a change
}

func (x *alarmIndex) loadQueues() error {
	ctx := context.Background()
	if _, err := x.db.Exec(ctx, queueIndexDDL); err != nil {
		return err
	}
	q := &x.queues
	q.stored, q.storedDead = map[shardQueue]int64{}, map[shardQueue]int64{}
	q.ready, q.dead, q.changed = map[string]map[string]*readyEntry{}, map[string]map[string]int64{}, map[string]chan struct{}{}
	_, rows, err := x.db.QueryRows(ctx, "SELECT shard, queue, depth FROM queue_ready", nil, sqlitex.Limits{MaxRows: 1 << 30, MaxBytes: 1 << 40})
	if err != nil {
		return err
	}
	for _, r := range rows {
		k := shardQueue{r[0].(string), r[1].(string)}
		q.stored[k] = asInt(r[2])
		// Unknown until the shard is read: ready at once, so the first
		// consumer finds out.
		q.entries(k.queue)[k.shard] = &readyEntry{queueState: queueState{depth: asInt(r[2])}}
	}
	_, rows, err = x.db.QueryRows(ctx, "SELECT shard, queue, count FROM queue_dead", nil, sqlitex.Limits{MaxRows: 1 << 30, MaxBytes: 1 << 40})
	if err != nil {
		return err
	}
	for _, r := range rows {
		k := shardQueue{r[0].(string), r[1].(string)}
		q.storedDead[k] = asInt(r[2])
		q.deadOf(k.queue)[k.shard] = asInt(r[2])
	}
	return nil
}

func (q *queueIndex) entries(queue string) map[string]*readyEntry {
	m := q.ready[queue]
	if m == nil {
		m = map[string]*readyEntry{}
		q.ready[queue] = m
	}
	return m
}

func (q *queueIndex) deadOf(queue string) map[string]int64 {
	m := q.dead[queue]
	if m == nil {
		m = map[string]int64{}
		q.dead[queue] = m
	}
	return m
}

// notify wakes the Receives waiting on queue.
func (q *queueIndex) notify(queue string) {
	if ch, ok := q.changed[queue]; ok {
		close(ch)
		delete(q.changed, queue)
	}
}

// queueChanged returns a channel closed at the next change to queue.
func (x *alarmIndex) queueChanged(queue string) <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	ch, ok := x.queues.changed[queue]
	if !ok {
		ch = make(chan struct{})
		x.queues.changed[queue] = ch
	}
	return ch
}

// syncWrite runs one statement with synchronous=FULL: the write, and
// everything before it, is durable when it returns.
func (x *alarmIndex) syncWrite(sql string, args ...driver.NamedValue) error {
	if _, err := x.db.ExecSys("PRAGMA synchronous=FULL"); err != nil {
		return err
	}
	_, err := x.db.ExecSys(sql, args...)
	if _, perr := x.db.ExecSys("PRAGMA synchronous=NORMAL"); err == nil {
		err = perr
	}
	return err
}

// announceReady makes sure, durably, that the hint for (shard, queue)
// exists: called before a commit that enqueues on it.
func (x *alarmIndex) announceReady(shard, queue string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := shardQueue{shard, queue}
	if _, ok := x.queues.stored[k]; ok {
		return nil
	}
	if err := x.syncWrite("INSERT OR REPLACE INTO queue_ready(shard, queue, depth) VALUES (?, ?, 1)",
		driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: queue}); err != nil {
		return err
	}
	x.queues.stored[k] = 1
	if m := x.queues.entries(queue); m[shard] == nil {
		m[shard] = &readyEntry{queueState: queueState{depth: 1}} // unknown: ready at once
	}
	return nil
}

// announceDead is announceReady for dead letters.
func (x *alarmIndex) announceDead(shard, queue string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := shardQueue{shard, queue}
	if _, ok := x.queues.storedDead[k]; ok {
		return nil
	}
	if err := x.syncWrite("INSERT OR REPLACE INTO queue_dead(shard, queue, count) VALUES (?, ?, 1)",
		driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: queue}); err != nil {
		return err
	}
	x.queues.storedDead[k] = 1
	if m := x.queues.deadOf(queue); m[shard] == 0 {
		m[shard] = 1
	}
	return nil
}

// setReady records the state of (shard, queue) read from the shard file.
// The durable hint's depth follows (not synchronously: it is a hint) while
// the queue holds messages; an empty queue keeps its hint until the shard
// hibernates (forgetDrained), so that a queue drained and refilled does not
// sync the index on every enqueue.
func (x *alarmIndex) setReady(shard, queue string, st queueState) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	q := &x.queues
	m := q.entries(queue)
	e := m[shard]
	if st.depth == 0 {
		if e != nil && !e.busy {
			delete(m, shard)
		} else if e != nil {
			e.queueState, e.known = st, true
		}
	} else {
		if e == nil {
			e = &readyEntry{}
			m[shard] = e
		}
		e.queueState, e.known = st, true
		q.notify(queue)
	}
	k := shardQueue{shard, queue}
	if cur, ok := q.stored[k]; st.depth > 0 && (!ok || cur != st.depth) {
		if _, err := x.db.ExecSys("INSERT OR REPLACE INTO queue_ready(shard, queue, depth) VALUES (?, ?, ?)",
			driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: queue}, driver.NamedValue{Ordinal: 3, Value: st.depth}); err != nil {
			return err
		}
		q.stored[k] = st.depth
	}
	return nil
}

// setDead records the dead-letter count of (shard, queue).
func (x *alarmIndex) setDead(shard, queue string, n int64) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	q := &x.queues
	k := shardQueue{shard, queue}
	if n == 0 {
		delete(q.deadOf(queue), shard)
		if _, ok := q.storedDead[k]; !ok {
			return nil
		}
		delete(q.storedDead, k)
		_, err := x.db.ExecSys("DELETE FROM queue_dead WHERE shard = ? AND queue = ?", driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: queue})
		return err
	}
	q.deadOf(queue)[shard] = n
	if cur, ok := q.storedDead[k]; !ok || cur != n {
		if _, err := x.db.ExecSys("INSERT OR REPLACE INTO queue_dead(shard, queue, count) VALUES (?, ?, ?)",
			driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: queue}, driver.NamedValue{Ordinal: 3, Value: n}); err != nil {
			return err
		}
		q.storedDead[k] = n
	}
	return nil
}

// takeReady marks busy and returns the shards whose head of queue may be
// delivered at now, oldest message first, and the earliest time another
// becomes deliverable (0: none known).
func (x *alarmIndex) takeReady(queue string, now int64) ([]string, int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	var next int64
	type cand struct {
		shard  string
		oldest int64
	}
	var cands []cand
	for shard, e := range x.queues.ready[queue] {
		if e.busy {
			continue
		}
		if e.known && e.next > now {
			if next == 0 || e.next < next {
				next = e.next
			}
			continue
		}
		cands = append(cands, cand{shard, e.oldest})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].oldest < cands[j].oldest })
	for _, c := range cands {
		x.queues.ready[queue][c.shard].busy = true
		out = append(out, c.shard)
	}
	return out, next
}

// untake clears busy on shards takeReady returned.
func (x *alarmIndex) untake(queue string, shards []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	m := x.queues.ready[queue]
	for _, s := range shards {
		if e := m[s]; e != nil {
			e.busy = false
			if e.known && e.depth == 0 {
				delete(m, s)
			}
		}
	}
	if len(shards) > 0 {
		x.queues.notify(queue)
	}
}

// forgetShard drops every queue entry of a shard that is not on this node
// (moved away, or dropped).
func (x *alarmIndex) forgetShard(shard string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.forgetLocked(shard, false)
}

// forgetDrained drops the durable ready hints of a hibernating shard whose
// queues are empty.
func (x *alarmIndex) forgetDrained(shard string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.forgetLocked(shard, true)
}

func (x *alarmIndex) forgetLocked(shard string, drainedOnly bool) {
	q := &x.queues
	for k := range q.stored {
		if k.shard != shard {
			continue
		}
		if drainedOnly {
			// No entry in memory: the shard was read and found empty
			// (setReady drops empty entries).
			if e := q.ready[k.queue][shard]; e != nil && (!e.known || e.depth > 0) {
				continue
			}
		}
		if _, err := x.db.ExecSys("DELETE FROM queue_ready WHERE shard = ? AND queue = ?", driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: k.queue}); err != nil {
			continue // kept: a hint too many costs one activation
		}
		delete(q.stored, k)
		if e := q.ready[k.queue][shard]; e != nil && !e.busy {
			delete(q.ready[k.queue], shard)
		}
	}
	if drainedOnly {
		return
	}
	for _, m := range q.ready {
		if e := m[shard]; e != nil && !e.busy {
			delete(m, shard)
		}
	}
	for k := range q.storedDead {
		if k.shard == shard {
			if _, err := x.db.ExecSys("DELETE FROM queue_dead WHERE shard = ? AND queue = ?", driver.NamedValue{Ordinal: 1, Value: shard}, driver.NamedValue{Ordinal: 2, Value: k.queue}); err == nil {
				delete(q.storedDead, k)
			}
		}
	}
	for _, m := range q.dead {
		delete(m, shard)
	}
}

// deadShards lists the (shard, queue) pairs with dead letters (queue "":
// every queue).
func (x *alarmIndex) deadShards(queue string) []shardQueue {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []shardQueue
	for qn, m := range x.queues.dead {
		if queue != "" && qn != queue {
			continue
		}
		for s := range m {
			out = append(out, shardQueue{s, qn})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].queue != out[j].queue {
			return out[i].queue < out[j].queue
		}
		return out[i].shard < out[j].shard
	})
	return out
}

// queueStats is one queue's figures on this node, for metrics.
type queueStats struct {
	depth, dead int64
	oldest      int64 // enqueue time of the oldest known message (0: none)
}

func (x *alarmIndex) queueStats(queue string) queueStats {
	x.mu.Lock()
	defer x.mu.Unlock()
	var s queueStats
	for _, e := range x.queues.ready[queue] {
		s.depth += e.depth
		if e.oldest != 0 && (s.oldest == 0 || e.oldest < s.oldest) {
			s.oldest = e.oldest
		}
	}
	for _, n := range x.queues.dead[queue] {
		s.dead += n
	}
	return s
}

func sortDead(ms []api.QueueMessage) {
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].Died.Before(ms[j].Died) })
}

// queueCollector reports each declared queue's depth, oldest message age
// and dead letters on this node, from the index (messages of shards this
// node has not read since it started count at their hint's depth).
type queueCollector struct {
	h                   *Host
	depth, oldest, dead *prometheus.Desc
}

func newQueueCollector(h *Host) *queueCollector {
	return &queueCollector{h: h,
		depth:  prometheus.NewDesc("lunora_queue_depth", "Messages in the queue on shards this node holds (leased ones included).", []string{"queue"}, nil),
		oldest: prometheus.NewDesc("lunora_queue_oldest_age_seconds", "Age of the oldest message in the queue on shards this node holds and has read since it started (0: none).", []string{"queue"}, nil),
		dead:   prometheus.NewDesc("lunora_queue_dead_letters", "Dead letters of the queue on shards this node holds.", []string{"queue"}, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.oldest
	ch <- c.dead
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.h.cfg.Now()
	for _, q := range c.h.cfg.App.QueueNames() {
		s := c.h.alarms.queueStats(q)
		age := 0.0
		if s.oldest != 0 {
			age = max(now.Sub(time.UnixMilli(s.oldest)).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(s.depth), q)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, q)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(s.dead), q)
	}
}
