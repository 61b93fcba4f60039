package raftglobal

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	sqlite3 "github.com/mattn/go-sqlite3"
	"google.golang.org/grpc/codes"
)

// dbName names the global tier in error messages.
const dbName = "global"

// systemSchema is the FSM's own bookkeeping and the cluster metadata. It is
// applied (idempotently) with the user's Schema when the FSM opens and after
// every restore.
var systemSchema = []string{
	// applied_index is the highest log index whose effects are in this file,
	// written in the same transaction as those effects.
	`CREATE TABLE IF NOT EXISTS __lunora_raft (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID`,
	`INSERT OR IGNORE INTO __lunora_raft (k, v) VALUES ('applied_index', 0), ('applied_term', 0)`,
	`CREATE TABLE IF NOT EXISTS __lunora_ring (epoch INTEGER PRIMARY KEY, nodes TEXT NOT NULL, created_ms INTEGER NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS __lunora_nodes (id TEXT PRIMARY KEY, grpc_addr TEXT NOT NULL, raft_addr TEXT NOT NULL,
		state TEXT NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID`,
	// The column owner is the shard's *holder*, the node with its file (the
	// Go API says holder: ShardHolder, HeldShards; a shard's owner is its
	// ring position). It keeps its name because existing replicas' files
	// and snapshots have it. Set when the shard is created, changed only by
	// the holder when a handoff has made the copy on the new node durable
	// (invariant I3).
	`CREATE TABLE IF NOT EXISTS __lunora_shards (id TEXT PRIMARY KEY, grp TEXT NOT NULL, created_ms INTEGER NOT NULL,
		owner TEXT NOT NULL DEFAULT '', moved_ms INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID`,
	`CREATE INDEX IF NOT EXISTS __lunora_shards_grp ON __lunora_shards (grp, id)`,
	`CREATE INDEX IF NOT EXISTS __lunora_shards_owner ON __lunora_shards (owner, id)`,
	// The newest ring operation of each node's process (ChangeRing):
	// incarnation orders the processes of one node, has_left says whether that
	// process has left. A join or leave of an older process is refused.
	`CREATE TABLE IF NOT EXISTS __lunora_ring_ops (id TEXT PRIMARY KEY, incarnation INTEGER NOT NULL,
		has_left INTEGER NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID`,
	// The API keys (keys.go): only the SHA-256 of each secret is stored;
	// revoked_ms 0 is a live key. User SQL cannot read this table (the
	// sandbox refuses it, see sqlitex).
	`CREATE TABLE IF NOT EXISTS __lunora_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
		hash BLOB NOT NULL, created_ms INTEGER NOT NULL, revoked_ms INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID`,
	cronSchema,
}

// cmdResult is what one command of an entry produced.
type cmdResult struct {
	res *api.Result
	err error
}

// entryResult is FSM.Apply's response for one entry, handed back to the
// leader's Write through ApplyFuture.Response.
type entryResult struct {
	cmds []cmdResult
	err  error // the entry could not be decoded
}

// fsm is the replicated state machine: one SQLite file. Apply, ApplyBatch,
// Snapshot and Restore are called by Raft from one goroutine (Restore never
// concurrently with the others); reads, prechecks and checksums use the
// pool of read-only connections from any goroutine.
type fsm struct {
	cfg  *Config
	log  *slog.Logger
	m    *metrics
	dir  string
	path string

	// Owned by Raft's FSM goroutine (and by Open/Close while Raft is not
	// running).
	w   *sqlitex.Conn
	rnd entropy

	// swap is held shared by every user of a read connection (reads,
	// snapshots being persisted) and exclusively by Restore while it
	// replaces the file.
	swap        sync.RWMutex
	closed      bool // under swap
	readers     chan *sqlitex.Conn
	readerSlots chan struct{}

	applied  atomic.Uint64 // applied_index as committed in the file
	waitMu   sync.Mutex
	waitCh   chan struct{} // closed when applied advances
	executed atomic.Uint64 // command entries run
	skipped  atomic.Uint64 // entries already in the file on replay
	restores atomic.Uint64
}

func openFSM(cfg *Config, log *slog.Logger, m *metrics) (*fsm, error) {
	dir := filepath.Join(cfg.Dir, "fsm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Leftovers of a snapshot or restore cut short by a crash.
	for _, pat := range []string{"snapshot-*.tmp*", "restore-*.tmp*"} {
		old, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, p := range old {
			os.Remove(p)
		}
	}
	f := &fsm{
		cfg:         cfg,
		log:         log,
		m:           m,
		dir:         dir,
		path:        filepath.Join(dir, "global.db"),
		readers:     make(chan *sqlitex.Conn, cfg.ReadConns),
		readerSlots: make(chan struct{}, cfg.ReadConns),
		waitCh:      make(chan struct{}),
	}
	if err := f.openWriter(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fsm) connOptions(readOnly bool) sqlitex.Options {
	// synchronous=NORMAL: in WAL mode a commit is not fsync'd, so a power
	// loss can lose the last transactions but never corrupts the file. The
	// Raft log is the durable record: entries the file lost are applied
	// again from it (or from a snapshot, see restoreIfBehind).
	return sqlitex.Options{Synchronous: "NORMAL", CacheKiB: f.cfg.CacheKiB, ReadOnly: readOnly, MaxSQLLen: f.cfg.MaxSQLLen}
}

func (f *fsm) openWriter() error {
	w, err := sqlitex.Open(f.path, f.connOptions(false))
	if err != nil {
		return api.Errorf(codes.Internal, "global tier: %v", err)
	}
	if err := w.C.RegisterFunc("random", f.rnd.random, false); err != nil {
		w.Close()
		return fmt.Errorf("register random: %w", err)
	}
	if err := w.C.RegisterFunc("randomblob", f.rnd.randomBlob, false); err != nil {
		w.Close()
		return fmt.Errorf("register randomblob: %w", err)
	}
	ctx := context.Background()
	for _, ddl := range append(append([]string(nil), systemSchema...), f.cfg.Schema...) {
		if _, err := w.Exec(ctx, ddl); err != nil {
			w.Close()
			return api.Errorf(codes.FailedPrecondition, "global tier schema: %q: %v", ddl, err)
		}
	}
	f.w = w
	idx, err := storedIndex(ctx, w)
	if err != nil {
		w.Close()
		return err
	}
	f.setApplied(idx)
	return nil
}

func storedIndex(ctx context.Context, c *sqlitex.Conn) (uint64, error) {
	_, rows, err := c.QueryRows(ctx, "SELECT v FROM __lunora_raft WHERE k = 'applied_index'", nil, sqlitex.Limits{MaxRows: 1, MaxBytes: 64})
	if err != nil || len(rows) != 1 {
		return 0, api.Errorf(codes.Internal, "global tier: read applied index: %v", err)
	}
	v, _ := rows[0][0].(int64)
	return uint64(v), nil
}

func (f *fsm) setApplied(idx uint64) {
	f.applied.Store(idx)
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// appliedWait returns a channel closed at the next advance of the applied
// index. Take it before reading the index to miss no advance.
func (f *fsm) appliedWait() <-chan struct{} {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.waitCh
}

// waitApplied waits until the file holds index idx or ctx ends.
func (f *fsm) waitApplied(ctx context.Context, idx uint64) error {
	for {
		ch := f.appliedWait()
		if f.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM. The entries of one call are
// applied in one SQLite transaction, each command in its own SAVEPOINT, and
// the transaction also records the last index: a restart finds the file's
// state and its index agree, and entries Raft replays at or below it are
// skipped. A failing command is rolled back alone; its neighbours are not.
//
// It must be deterministic: it reads no clock (lunora_now() is the entry's
// stamp), random() and randomblob() draw from a PRNG seeded by the entry's
// index and the command's position, and statements have no time limit.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	start := time.Now()
	// aborted holds the commands that made SQLite abandon the whole
	// transaction (INSERT OR ROLLBACK, …): the batch is run again without
	// them, and they fail alone, as if rolled back to their savepoint.
	aborted := map[[2]int]error{}
	for {
		resp, again := f.tryBatch(logs, aborted)
		if !again {
			f.m.fsmApply.Observe(time.Since(start).Seconds())
			return resp
		}
	}
}

func (f *fsm) tryBatch(logs []*raft.Log, aborted map[[2]int]error) ([]any, bool) {
	ctx := context.Background()
	resp := make([]any, len(logs))
	stored := f.applied.Load()
	var last *raft.Log
	var executed, skipped uint64
	inTx := false
	for i, l := range logs {
		if l.Index <= stored {
			skipped++
			continue
		}
		if !inTx {
			f.mustExec(ctx, "BEGIN IMMEDIATE")
			inTx = true
		}
		last = l
		if l.Type != raft.LogCommand {
			continue
		}
		executed++
		e, err := decodeEntry(l.Data)
		if err != nil {
			resp[i] = &entryResult{err: api.Errorf(codes.Internal, "global tier: entry %d: %v", l.Index, err)}
			continue
		}
		out := &entryResult{cmds: make([]cmdResult, len(e.Cmds))}
		f.w.Now = time.Unix(0, e.Time)
		for j := range e.Cmds {
			if err, ok := aborted[[2]int{i, j}]; ok {
				out.cmds[j].err = err
				continue
			}
			f.mustExec(ctx, "SAVEPOINT cmd")
			f.rnd.seed(l.Index, j)
			res, err := f.run(ctx, &e.Cmds[j])
			if err != nil {
				if f.w.C.AutoCommit() {
					// SQLite rolled the whole transaction back.
					aborted[[2]int{i, j}] = err
					return nil, true
				}
				f.mustExec(ctx, "ROLLBACK TO cmd")
				f.mustExec(ctx, "RELEASE cmd")
				out.cmds[j].err = err
				continue
			}
			f.mustExec(ctx, "RELEASE cmd")
			res.Seq = l.Index
			out.cmds[j].res = res
		}
		f.w.Now = time.Time{}
		resp[i] = out
	}
	f.skipped.Add(skipped)
	if !inTx {
		return resp, false
	}
	f.mustExec(ctx, "UPDATE __lunora_raft SET v = CASE k WHEN 'applied_index' THEN ? ELSE ? END",
		driver.NamedValue{Ordinal: 1, Value: int64(last.Index)}, driver.NamedValue{Ordinal: 2, Value: int64(last.Term)})
	f.mustExec(ctx, "COMMIT")
	f.executed.Add(executed)
	f.setApplied(last.Index)
	return resp, false
}

// mustExec runs a bookkeeping statement of the FSM's own. If one fails the
// file can no longer follow the log (disk full, I/O error): a replica that
// went on would diverge, so the process stops and a restart replays the
// log from the file's last committed index.
func (f *fsm) mustExec(_ context.Context, stmt string, args ...driver.NamedValue) {
	f.w.User = false
	// From the statement cache: these few statements run for every entry.
	if _, err := f.w.ExecSys(stmt, args...); err != nil {
		f.log.Error("global tier FSM cannot apply the log; stopping", "statement", stmt, "error", err)
		panic(fmt.Sprintf("raftglobal: FSM storage failure on %q: %v", stmt, err))
	}
}

// run executes one command's statements in the open savepoint.
func (f *fsm) run(ctx context.Context, cmd *wireCommand) (*api.Result, error) {
	c := f.w
	args := cmd.namedValues()
	before, err := c.TotalChanges()
	if err != nil {
		return nil, f.classify(err)
	}
	c.Reset()
	defer func() { c.User = false }()
	res := &api.Result{}
	lim := sqlitex.Limits{MaxRows: f.cfg.MaxResultRows, MaxBytes: f.cfg.MaxResultBytes}
	for i, stmt := range cmd.SQL {
		if i < len(cmd.SQL)-1 {
			// As before, unsandboxed and stepped once, but prepared once
			// per connection (ExecSys's statement cache) rather than
			// parsed and authorized anew on every apply: a replica on an
			// older version runs it the same way, so their states agree.
			c.User = false
			if _, err := c.ExecSys(stmt, args...); err != nil {
				return nil, f.classify(err)
			}
			continue
		}
		c.User = !cmd.Sys
		cols, rows, err := c.QueryRows(ctx, stmt, args, lim)
		if err != nil {
			return nil, f.classify(err)
		}
		res.Columns, res.Rows = cols, rows
	}
	c.User = false
	after, err := c.TotalChanges()
	if err != nil {
		return nil, f.classify(err)
	}
	res.RowsAffected = after - before
	return res, nil
}

// classify turns a statement's error into a coded error, stopping the
// process on an error that is not the statement's fault and would not
// happen the same way on every replica.
func (f *fsm) classify(err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrFull, sqlite3.ErrIoErr, sqlite3.ErrCorrupt, sqlite3.ErrNotADB,
			sqlite3.ErrCantOpen, sqlite3.ErrNomem, sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrProtocol:
			f.log.Error("global tier FSM storage failure; stopping", "error", err)
			panic(fmt.Sprintf("raftglobal: FSM storage failure: %v", err))
		}
	}
	return f.w.Classify(err, dbName)
}

// reader checks out a read-only connection. The caller holds f.swap shared.
func (f *fsm) reader(ctx context.Context) (*sqlitex.Conn, error) {
	if f.closed {
		return nil, ErrClosed
	}
	select {
	case r := <-f.readers:
		return r, nil
	default:
	}
	select {
	case r := <-f.readers:
		return r, nil
	case f.readerSlots <- struct{}{}:
		r, err := sqlitex.Open(f.path, f.connOptions(true))
		if err != nil {
			<-f.readerSlots
			return nil, api.Errorf(codes.Internal, "global tier: open read connection: %v", err)
		}
		return r, nil
	case <-ctx.Done():
		return nil, api.Errorf(api.CodeOf(ctx.Err()), "global tier: waiting for a read connection: %v", ctx.Err())
	}
}

func (f *fsm) putReader(r *sqlitex.Conn) {
	r.User, r.Now = false, time.Time{}
	if !r.C.AutoCommit() {
		// A read that could not end its transaction: never hand it on.
		if _, err := r.Exec(context.Background(), "ROLLBACK"); err != nil {
			r.Close()
			<-f.readerSlots
			return
		}
	}
	f.readers <- r
}

// read runs a command in one read transaction and reports the applied
// index that transaction saw as the result's Seq.
func (f *fsm) read(ctx context.Context, cmd *wireCommand) (*api.Result, error) {
	f.swap.RLock()
	defer f.swap.RUnlock()
	r, err := f.reader(ctx)
	if err != nil {
		return nil, err
	}
	defer f.putReader(r)
	ctx, cancel := context.WithTimeout(ctx, f.cfg.StatementTimeout)
	defer cancel()
	r.Reset()
	// BEGIN and COMMIT from the statement cache, on no context: the
	// driver runs a statement given a cancellable context on a goroutine
	// of its own.
	if _, err := r.ExecSys("BEGIN"); err != nil {
		return nil, r.Classify(err, dbName)
	}
	defer r.ExecSys("COMMIT")
	defer func() { r.User = false }() // before COMMIT, which the sandbox refuses
	idx, err := storedIndex(ctx, r)
	if err != nil {
		return nil, err
	}
	res := &api.Result{Seq: idx}
	args := cmd.namedValues()
	lim := sqlitex.Limits{MaxRows: f.cfg.MaxResultRows, MaxBytes: f.cfg.MaxResultBytes}
	r.Now = time.Now()
	for i, stmt := range cmd.SQL {
		r.User = !cmd.Sys
		if i < len(cmd.SQL)-1 {
			if _, err := r.Exec(ctx, stmt, args...); err != nil {
				return nil, r.Classify(err, dbName)
			}
			continue
		}
		cols, rows, err := r.QueryRows(ctx, stmt, args, lim)
		if err != nil {
			return nil, r.Classify(err, dbName)
		}
		res.Columns, res.Rows = cols, rows
	}
	return res, nil
}

// precheck prepares each statement's first statement on a read connection
// with the sandbox on, so bad SQL and sandbox refusals are answered before
// they enter the log. The FSM checks again when it runs them.
func (f *fsm) precheck(ctx context.Context, sqls []string) error {
	f.swap.RLock()
	defer f.swap.RUnlock()
	r, err := f.reader(ctx)
	if err != nil {
		return err
	}
	defer f.putReader(r)
	for _, s := range sqls {
		r.Reset()
		r.User = true
		st, err := r.C.Prepare(s)
		r.User = false
		if err != nil {
			return r.Classify(err, dbName)
		}
		st.Close()
	}
	return nil
}

// closeReaders closes the idle read connections. The caller holds f.swap
// exclusively, so none is checked out.
func (f *fsm) closeReaders() {
	for {
		select {
		case r := <-f.readers:
			r.Close()
			<-f.readerSlots
		default:
			return
		}
	}
}

func (f *fsm) close() error {
	f.swap.Lock()
	defer f.swap.Unlock()
	f.closed = true
	f.closeReaders()
	if f.w == nil {
		return nil
	}
	err := f.w.Close()
	f.w = nil
	return err
}

// restoreIfBehind restores the newest snapshot into the file when the file
// is behind it: the file lost transactions (synchronous=NORMAL and a power
// loss, or it was deleted) that the log no longer holds. Raft does not do
// it on start (NoSnapshotRestoreOnStart).
func (f *fsm) restoreIfBehind(snaps raft.SnapshotStore) error {
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(list) == 0 || list[0].Index <= f.applied.Load() {
		return nil
	}
	meta, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", list[0].ID, err)
	}
	f.log.Warn("FSM file is behind the newest snapshot; restoring it", "file_index", f.applied.Load(), "snapshot_index", meta.Index)
	return f.Restore(rc)
}

// FSMStats counts what the FSM did since the process started.
type FSMStats struct {
	AppliedIndex uint64 // the index committed in the FSM's file
	Executed     uint64 // command entries run
	Skipped      uint64 // entries Raft replayed that the file already held
	Restores     uint64 // snapshots restored
}

func (f *fsm) stats() FSMStats {
	return FSMStats{AppliedIndex: f.applied.Load(), Executed: f.executed.Load(), Skipped: f.skipped.Load(), Restores: f.restores.Load()}
}

var _ raft.BatchingFSM = (*fsm)(nil)
