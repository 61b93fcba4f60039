package shardhost

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/internal/fdsync"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// Node-level durability (Config.Durability "node", DESIGN.md): shard
// writers commit with synchronous=NORMAL — in WAL mode SQLite writes the
// commit's frames to the -wal file and does not sync them — and hand each
// batch to the node's syncer. One syncer round takes every shard with
// unsynced commits, fdatasyncs their -wal files (a few at a time, in
// parallel) and then completes every batch committed before the round:
// their mutations are acknowledged and their commits published to live
// queries. A shard's WAL is written sequentially, so one fdatasync covers
// every earlier commit of that shard.
//
// Checkpoints stay SQLite's (wal_autocheckpoint on the writer connection):
// with synchronous=NORMAL SQLite syncs the WAL before it copies frames into
// the database file and syncs the database file before the WAL may be
// restarted, so a checkpoint never drops a frame the syncer has not synced;
// it only makes more of it durable. The -wal file is never deleted while
// the actor lives (its writer connection holds it open; hibernation waits
// for the writer, which waits for its last batch to be durable).

// Durability modes (Config.Durability).
const (
	// DurabilityShard: each shard's writer commits with Config.Synchronous
	// and acknowledges when its own COMMIT returns.
	DurabilityShard = "shard"
	// DurabilityNode: one node-wide syncer makes the commits of every shard
	// durable together (requires Synchronous FULL).
	DurabilityNode = "node"
)

// batch is one group commit of a shard as the durability path sees it:
// what it committed (commit count and sequence numbers, with the tables
// each commit wrote, for live queries) and the mutations to acknowledge
// once it is durable. It is the unit a follower would receive, too.
type batch struct {
	a      *actor
	commit uint64 // the shard's commit count after the batch's last COMMIT
	first  uint64 // first sequence number the batch used (first > last: none)
	last   uint64 // the shard's sequence number after the batch
	pubs   []publication
	ms     []*mutation
	// synced, when set, is closed once the batch is durable (or failed).
	synced chan struct{}
}

// publication is one COMMIT that advanced the sequence number: first..last
// and the tables it wrote.
type publication struct {
	first, last uint64
	tables      []string
}

// durable is a shard's durability state, shared between its writer, its
// readers and the syncer.
type durable struct {
	mu     sync.Mutex
	commit uint64 // commits durable (counted like actor.commits)
	seq    uint64 // highest sequence number durable
	err    error  // a failed sync: nothing after it is known durable
	// completed counts the commits whose batches the syncer has completed
	// (node mode): the writer hands over its next batch only after that.
	completed uint64
	moved     chan struct{}
	wal       *os.File // the -wal file, opened for fdatasync (node mode)
	// syncedLen is the -wal length at the last successful fdatasync (for
	// the crash-point tests' power-cut simulation).
	syncedLen int64
}

func (d *durable) advance(commit, seq uint64, err error) {
	d.mu.Lock()
	if err != nil && d.err == nil {
		d.err = err
	}
	if err == nil && d.err == nil {
		if commit > d.commit {
			d.commit = commit
		}
		if seq > d.seq {
			d.seq = seq
		}
	}
	d.notifyLocked()
	d.mu.Unlock()
}

// notifyLocked wakes whoever waits for d to change (changedLocked); d.mu
// is held.
func (d *durable) notifyLocked() {
	if d.moved != nil {
		close(d.moved)
		d.moved = nil
	}
}

// changedLocked returns a channel closed at d's next change (advance,
// completeTo); d.mu is held.
func (d *durable) changedLocked() chan struct{} {
	if d.moved == nil {
		d.moved = make(chan struct{})
	}
	return d.moved
}

// completeTo records that every batch up to commit has been completed
// (acknowledged, published) by the syncer.
func (d *durable) completeTo(commit uint64) {
	d.mu.Lock()
	if commit > d.completed {
		d.completed = commit
	}
	d.notifyLocked()
	d.mu.Unlock()
}

// state returns the durable commit count and sequence number and the
// sticky sync error.
func (d *durable) state() (uint64, uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.commit, d.seq, d.err
}

// waitSeq waits until seq is durable. A reader calls it for its snapshot's
// sequence number before it returns anything read in it (I2).
func (a *actor) waitDurableSeq(ctx context.Context, seq uint64) error {
	d := &a.dur
	for {
		d.mu.Lock()
		if d.err != nil {
			err := d.err
			d.mu.Unlock()
			return api.Errorf(codes.Unavailable, "shard %s: %v", a.id, err)
		}
		if d.seq >= seq {
			d.mu.Unlock()
			return nil
		}
		ch := d.changedLocked()
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return api.Errorf(api.CodeOf(ctx.Err()), "shard %s: %v while waiting for commit %d to be durable", a.id, ctx.Err(), seq)
		}
	}
}

// syncer is the node's durability round loop (node mode only).
type syncer struct {
	h        *Host
	mu       sync.Mutex
	queue    []*batch
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	parallel int
	method   string
	rounds   int // rounds in flight at once
}

// syncParallel is how many -wal files one durability round fdatasyncs at
// once. The calls run on package fdsync's threads (as many), outside the
// Go scheduler; syncs of different files overlap on the device, so a
// round of 32 takes little longer than a round of one (DESIGN.md).
const syncParallel = 32

// Sync methods of a round (LUNORA_SYNC_METHOD, for measurements).
const (
	syncFdatasync = "fdatasync" // one fdatasync per shard's -wal, in parallel
	syncFS        = "syncfs"    // one syncfs of the shards' file system
)

func newSyncer(h *Host) *syncer {
	s := &syncer{h: h, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), parallel: syncParallel}
	// Measurement knobs (DESIGN.md, "Node-level durability"): the
	// alternatives the default was chosen against.
	if v, err := strconv.Atoi(os.Getenv("LUNORA_SYNC_PARALLEL")); err == nil && v > 0 {
		s.parallel = v
	}
	s.method = syncFdatasync
	if os.Getenv("LUNORA_SYNC_METHOD") == syncFS || h.cfg.crash.syncfs {
		s.method = syncFS
	}
	s.rounds = 1
	if v, err := strconv.Atoi(os.Getenv("LUNORA_SYNC_ROUNDS")); err == nil && v > 0 {
		s.rounds = v
	}
	if pipelineDepth > 1 {
		// Two batches of one shard in the syncer must not complete out of
		// order: one round at a time.
		s.rounds = 1
	}
	go s.run()
	return s
}

// enqueue hands a committed batch to the next round. Never blocks.
func (s *syncer) enqueue(b *batch) {
	s.mu.Lock()
	s.queue = append(s.queue, b)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close stops the loop once every queued batch is complete.
func (s *syncer) close() {
	close(s.stop)
	<-s.done
}

func (s *syncer) run() {
	var wg sync.WaitGroup
	for range s.rounds {
		wg.Go(s.loop)
	}
	wg.Wait()
	close(s.done)
}

// loop is one round worker: it takes whatever is queued when it is free.
// With several workers a round starts while another is still syncing;
// a shard has at most one batch in the syncer at a time (waitPipeline
// waits for the previous one's completion), so its batches still complete
// in commit order.
func (s *syncer) loop() {
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			s.mu.Lock()
			n := len(s.queue)
			s.mu.Unlock()
			if n == 0 {
				return
			}
		}
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		if len(q) > 0 {
			s.round(q)
		}
	}
}

// round makes every batch of q durable and completes it. Batches of one
// shard are in commit order; one fdatasync per shard covers them all.
func (s *syncer) round(q []*batch) {
	start := time.Now()
	byShard := map[*actor]*shardRound{}
	var order []*shardRound
	for _, b := range q {
		r := byShard[b.a]
		if r == nil {
			r = &shardRound{a: b.a}
			byShard[b.a] = r
			order = append(order, r)
		}
		r.batches = append(r.batches, b)
	}
	if hook := s.h.cfg.crash.beforeSync; hook != nil {
		hook()
	}
	var todo []*shardRound
	for _, r := range order {
		last := r.batches[len(r.batches)-1]
		if c, _, err := r.a.dur.state(); err == nil && c >= last.commit {
			continue // nothing new (another round synced it)
		}
		todo = append(todo, r)
	}
	if s.method == syncFS && len(todo) > 0 {
		s.syncFS(todo)
	} else {
		syncOne := func(r *shardRound) {
			r.err = r.a.syncWAL()
			if hook := s.h.cfg.crash.afterShardSync; hook != nil {
				hook(r.a.id)
			}
		}
		// The first shard's fdatasync runs on the syncer goroutine (a
		// round of one shard hands nothing over); the others in parallel.
		sem := make(chan struct{}, s.parallel)
		var wg sync.WaitGroup
		for _, r := range todo[min(1, len(todo)):] {
			sem <- struct{}{}
			wg.Add(1)
			go func(r *shardRound) {
				defer func() { <-sem; wg.Done() }()
				syncOne(r)
			}(r)
		}
		if len(todo) > 0 {
			syncOne(todo[0])
		}
		wg.Wait()
	}
	if hook := s.h.cfg.crash.afterSync; hook != nil {
		hook()
	}
	for _, r := range order {
		last := r.batches[len(r.batches)-1]
		r.a.dur.advance(last.commit, last.last, r.err)
		if r.err != nil {
			s.h.log.Error("sync a shard's write-ahead log; its later commits are refused until it hibernates", "shard", r.a.id, "err", r.err)
		}
		for _, b := range r.batches {
			b.complete(r.err)
		}
		r.a.dur.completeTo(last.commit)
	}
	if hook := s.h.cfg.crash.afterAcks; hook != nil {
		hook()
	}
	s.h.m.syncRounds.Observe(time.Since(start).Seconds())
	s.h.m.syncShards.Observe(float64(len(order)))
}

// shardRound is one shard's part of a round.
type shardRound struct {
	a       *actor
	batches []*batch
	err     error
}

// syncFS makes the round durable with one syncfs(2) of the file system
// holding the shards: every dirty page of it is written back and the
// device cache flushed, in one call for all the round's shards.
func (s *syncer) syncFS(todo []*shardRound) {
	lens := make([]int64, len(todo))
	for i, r := range todo {
		st, err := r.a.dur.wal.Stat()
		if err != nil {
			r.err = fmt.Errorf("stat %s: %w", r.a.dur.wal.Name(), err)
			continue
		}
		lens[i] = st.Size()
	}
	err := syncfs(todo[0].a.dur.wal)
	for i, r := range todo {
		if r.err != nil {
			continue
		}
		if err != nil {
			r.err = fmt.Errorf("syncfs: %w", err)
			continue
		}
		r.a.dur.mu.Lock()
		r.a.dur.syncedLen = lens[i]
		r.a.dur.mu.Unlock()
		if hook := s.h.cfg.crash.afterShardSync; hook != nil {
			hook(r.a.id)
		}
	}
}

func syncfs(f *os.File) error {
	for {
		err := unix.Syncfs(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// syncWAL fdatasyncs the shard's -wal file, recording the length it
// covers.
func (a *actor) syncWAL() error {
	f := a.dur.wal
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	a.dur.mu.Lock()
	a.dur.syncedLen = st.Size()
	a.dur.mu.Unlock()
	return nil
}

// fdatasync runs on a thread outside the Go scheduler (package fdsync):
// a round's parallel syncs must not hold the node's Ps while the disk
// works.
func fdatasync(f *os.File) error {
	return fdsync.Fdatasync(f)
}

// openWAL opens the shard's -wal file for the syncer and makes the file as
// it is now durable: a shard serves nothing before what its file holds is
// on disk (a process crash leaves commits that were never synced, and
// activation's own writes are not synced at commit). The directory is
// synced too, so the -wal file's entry is durable.
//
// None of that is needed when clean, the stamp of this process's last
// clean close of the shard, still matches its files: that close synced
// the database file (its checkpoint did), left the -wal empty, and the
// activation before it had made the -wal's entry durable; nothing has
// been written since.
func (a *actor) openWAL(dir string, clean *fileStamp) error {
	f, err := os.OpenFile(a.path+"-wal", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if clean != nil && clean.matches(a.path) {
		a.dur.wal = f
		a.h.m.cleanActivations.Inc()
		return nil
	}
	if err := a.syncWALFile(f); err != nil {
		f.Close()
		return err
	}
	db, err := os.OpenFile(a.path, os.O_RDWR, 0)
	if err != nil {
		f.Close()
		return err
	}
	err = fdatasync(db)
	db.Close()
	if err == nil {
		err = syncDirs(dir, dir)
	}
	if err != nil {
		f.Close()
		return err
	}
	a.dur.wal = f
	return nil
}

func (a *actor) syncWALFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := fdatasync(f); err != nil {
		return err
	}
	a.dur.syncedLen = st.Size()
	return nil
}

// noteCommit records a successful COMMIT of the writer: first..last are
// the sequence numbers it used (first > last: none). In shard mode the
// COMMIT itself was durable.
func (a *actor) noteCommit(first, last uint64) {
	a.commits++
	b := a.cur
	if first <= last {
		if b.first > b.last {
			b.first = first
		}
		b.pubs = append(b.pubs, publication{first: first, last: last, tables: append([]string(nil), a.w.Written()...)})
	}
	b.last = a.seq
	if a.h.sync == nil {
		a.dur.advance(a.commits, a.seq, nil)
	}
}

// flush ends the writer's current batch: in node mode it goes to the
// syncer (completed there once durable) unless nothing in it needs a sync;
// in shard mode it is complete at once. With wait the writer waits until
// it is durable (before it derives node-wide state from the commit: the
// alarm and queue indexes).
func (a *actor) flush(wait bool) {
	a.flushKeep(wait, false)
}

// syncNow makes everything the writer committed durable, waiting for it,
// and keeps the current batch's mutations for its next flush (they are
// acknowledged after the indexes follow the commit, as in shard mode).
func (a *actor) syncNow() {
	a.flushKeep(true, true)
}

func (a *actor) flushKeep(wait, keep bool) {
	b := a.cur
	a.cur = &batch{a: a, first: a.seq + 1, last: a.seq}
	if keep {
		a.cur.ms, b.ms = b.ms, nil
	}
	b.commit = a.commits
	b.last = a.seq
	if a.h.sync == nil {
		b.complete(nil)
		return
	}
	c, _, err := a.dur.state()
	if err == nil && c >= b.commit && len(b.pubs) == 0 {
		b.complete(nil)
		return
	}
	if err != nil {
		b.complete(err)
		return
	}
	if wait {
		b.synced = make(chan struct{})
	}
	a.submitted = append(a.submitted, b.commit)
	if len(a.submitted) > pipelineDepth {
		a.submitted = a.submitted[1:]
	}
	a.h.sync.enqueue(b)
	if wait {
		<-b.synced
	}
}

// pipelineDepth bounds the writer's batches waiting for the syncer: with
// 1 the writer commits its next batch only once the previous one is
// durable (it gathers meanwhile, so batches grow with the load, as with
// per-shard FULL commits); with 2 it commits one more batch while the
// previous one is being synced. LUNORA_SYNC_DEPTH overrides it (for
// measurements).
var pipelineDepth = func() int {
	if v, err := strconv.Atoi(os.Getenv("LUNORA_SYNC_DEPTH")); err == nil && v > 0 {
		return v
	}
	return 1
}()

// waitPipeline waits, before the writer commits its next batch, until
// fewer than pipelineDepth of its batches are waiting for the syncer. It
// reports whether it waited.
func (a *actor) waitPipeline() bool {
	if a.h.sync == nil || len(a.submitted) < pipelineDepth {
		return false
	}
	want := a.submitted[len(a.submitted)-pipelineDepth]
	d := &a.dur
	waited := false
	for {
		d.mu.Lock()
		if d.completed >= want || d.err != nil {
			d.mu.Unlock()
			return waited
		}
		ch := d.changedLocked()
		d.mu.Unlock()
		<-ch
		waited = true
	}
}

// complete publishes the batch's commits to live queries and acknowledges
// its mutations — or, if its sync failed, answers them UNAVAILABLE: the
// commit is in the shard's file but not known to be durable.
func (b *batch) complete(err error) {
	a := b.a
	if err == nil {
		for _, p := range b.pubs {
			a.publishCommit(p.first, p.last, p.tables)
		}
	}
	for _, m := range b.ms {
		if err != nil && m.err == nil {
			m.res, m.err = nil, api.Errorf(codes.Unavailable, "shard %s: the commit could not be made durable (%v); it may or may not survive a crash", a.id, err)
			a.h.budget.Release(m.held)
			m.held = 0
		}
		close(m.done)
	}
	if b.synced != nil {
		close(b.synced)
	}
}

// crashHooks are fault hooks of the durability path for the crash-point
// tests (export_test.go sets them).
type crashHooks struct {
	beforeSync     func()               // a round has taken its batches, before any fdatasync
	afterShardSync func(shardID string) // one shard's fdatasync of the round returned
	afterSync      func()               // every fdatasync of the round returned, before the acks
	afterAcks      func()               // the round's batches are complete
	syncfs         bool                 // rounds use syncfs (syncFS)
}
