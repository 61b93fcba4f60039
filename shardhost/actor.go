package shardhost

import (
	"container/list"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// actor is one active shard: its writer connection and goroutine, its
// mailbox and its pool of read-only connections.
type actor struct {
	h     *Host
	id    string
	group string
	key   any // the shard_by value, typed; nil for the root shard
	path  string

	ready chan struct{} // closed when activation has finished
	err   error         // activation error, read after ready

	w       *sqlitex.Conn
	seq     uint64 // owned by the writer goroutine after activation
	commits uint64 // COMMITs of the writer; owned by it
	cur     *batch // the batch the writer is building (syncer.go)
	// submitted holds the commit counts of the writer's latest batches
	// handed to the syncer, newest last (at most pipelineDepth).
	submitted  []uint64
	dur        durable
	mailbox    *mailbox
	writerDone chan struct{}
	readers    chan *sqlitex.Conn // idle read connections
	readerSlot chan struct{}      // one token per open read connection

	// Live queries (notifier.go): the notifier starts with the first
	// subscription and stops when the shard hibernates. The writer loads
	// live after each commit; liveMu orders starting against stopping.
	liveMu      sync.Mutex
	live        atomic.Pointer[notifier]
	liveStopped bool

	sched alarmSched // lunora_schedule's state, owned by the writer

	// Guarded by h.mu.
	refs     int
	lastUsed time.Time
	shedAt   time.Time // lastUsed when the shard last shed its memory
	elem     *list.Element
	closed   chan struct{} // set when detached; closed when handles are closed
}

func newActor(h *Host, id, group string, key any) *actor {
	return &actor{
		h: h, id: id, group: group, key: key,
		path:       h.shardPath(id),
		ready:      make(chan struct{}),
		lastUsed:   time.Now(),
		readers:    make(chan *sqlitex.Conn, h.cfg.ReadConns),
		readerSlot: make(chan struct{}, h.cfg.ReadConns),
	}
}

// activate opens (or creates) the shard's file, migrates it to the app's
// schema and starts the writer goroutine.
func (a *actor) activate() error {
	// Bounded by the host's life too: Shutdown waits for the janitor,
	// which may be activating a shard to settle its registration.
	ctx, cancel := context.WithTimeout(a.h.life, 30*time.Second)
	defer cancel()
	created := false
	clean := a.h.takeClean(a.id)
	_, statErr := os.Stat(a.path)
	if reg := a.h.cfg.Registry; reg != nil {
		holder, exists, err := reg.ShardHolder(ctx, a.id)
		if err != nil {
			return api.Errorf(api.CodeOf(err), "shard %s: check the shard registry: %v", a.id, err)
		}
		self := a.h.cfg.NodeID
		switch {
		case exists && holder != "" && holder != self:
			// Another node holds it: this node's copy, if any, is one a
			// handoff left behind and is never served (I3) — or one this
			// node created whose registration lost the race; never
			// registered, it was never served, and goes.
			if statErr == nil {
				never, why := neverServed(a.path)
				a.h.log.Debug("a copy of a shard another node holds", "shard", a.id, "holder", holder, "never_served", never, "why", why)
				if never {
					if err := a.h.removeShardFiles(a.id); err != nil {
						return err
					}
				}
			}
			a.h.settled(a.id)
			return Elsewhere(a.id, holder)
		case exists && holder == self && hasFile(a.path+".incoming"):
			// A handoff to this node committed, but the sender's "done"
			// never arrived: install the copy it made durable.
			if err := a.h.installIncoming(a.id); err != nil {
				return err
			}
			statErr = nil
		case exists && os.IsNotExist(statErr):
			return api.Wrap(ErrShardElsewhere, fmt.Sprintf("shard %s is in the registry (held by %q) but its file is not on node %s; it will not be created empty", a.id, holder, self))
		}
	}
	if os.IsNotExist(statErr) {
		// Held until the new shard's registration is settled or in
		// doubt: SettleAll waits for it (register.go).
		a.h.createMu.RLock()
		defer a.h.createMu.RUnlock()
		if a.h.noCreate.Load() {
			return &api.Error{Code: codes.Unavailable, Reason: api.ReasonNotOwner, Msg: fmt.Sprintf("shard %s: node %s is leaving the ring and creates no new shard", a.id, a.h.cfg.NodeID)}
		}
		if err := os.MkdirAll(filepath.Dir(a.path), 0o755); err != nil {
			return api.Errorf(codes.Internal, "shard %s: create directory: %v", a.id, err)
		}
		created = true
	}
	w, err := sqlitex.Open(a.path, a.h.writerOptions())
	if err != nil {
		return api.Errorf(codes.Internal, "shard %s: %v", a.id, err)
	}
	removeNew := func() {
		w.Close()
		if created {
			os.Remove(a.path)
			os.Remove(a.path + "-wal")
			os.Remove(a.path + "-shm")
		}
	}
	seq, registered, err := migrate(ctx, w, a.h.cfg.App, a.id, a.group, a.key)
	if err != nil {
		removeNew()
		if _, ok := err.(*api.Error); ok {
			return err
		}
		return api.Errorf(codes.Internal, "shard %s: migrate: %v", a.id, err)
	}
	if created {
		// The new file's directory entries must be durable before any write
		// to it is acknowledged (I2).
		if err := syncDirs(filepath.Dir(a.path), filepath.Join(a.h.cfg.Dir, "shards")); err != nil {
			w.Close()
			return api.Errorf(codes.Internal, "shard %s: sync directory: %v", a.id, err)
		}
		a.h.onDisk.Add(1)
		a.h.m.onDisk.Set(float64(a.h.onDisk.Load()))
	}
	if reg := a.h.cfg.Registry; reg != nil && !registered {
		existed, holder, err := reg.RegisterShard(ctx, a.id)
		if err != nil && registrationRefused(err) {
			// Applied and refused (this node is not in the ring, say): it
			// can never commit, and the file was never served.
			w.Close()
			if rmErr := a.dropUnregistered(created); rmErr != nil {
				return rmErr
			}
			return api.Errorf(api.CodeOf(err), "shard %s: register in the shard registry: %v", a.id, err)
		}
		if err != nil {
			// The registration may have committed even though it failed
			// here (leadership lost in flight, a deadline after the Raft
			// entry): deleting the new file could leave the registry naming
			// this node as the holder of a file that no longer exists, a
			// shard unservable for good (I4 forbids recreating it). Keep
			// it, unregistered: the next activation registers it again
			// (create-if-absent) or, if another node holds the shard,
			// removes it then — and the janitor makes sure a next
			// activation comes (register.go).
			w.Close()
			a.h.log.Debug("shard registration outcome unknown; the file is kept until it is settled", "shard", a.id, "created", created, "err", err)
			a.h.noteUnregistered(a.id)
			return api.Errorf(api.CodeOf(err), "shard %s: register in the shard registry: %v", a.id, err)
		}
		if existed && holder != a.h.cfg.NodeID {
			// Another node registered it between our check (this node's
			// replica of the registry, which may lag) and now. The file
			// here — new, or one an earlier registration in doubt left —
			// was never served, and goes.
			w.Close()
			if err := a.dropUnregistered(created); err != nil {
				return err
			}
			return Elsewhere(a.id, holder)
		}
		if _, err := w.Exec(ctx, "INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('registered', 1)"); err != nil {
			removeNew()
			return api.Errorf(codes.Internal, "shard %s: record registration: %v", a.id, err)
		}
		a.h.log.Debug("registered a shard", "shard", a.id, "created", created, "existed", existed)
		a.h.settled(a.id)
	}
	if a.h.sync != nil {
		// Node mode: what the file holds now is made durable before the
		// shard serves anything (syncer.go) — unless this process closed
		// it cleanly and nothing has touched it since.
		if err := a.openWAL(filepath.Dir(a.path), clean); err != nil {
			w.Close()
			return api.Errorf(codes.Internal, "shard %s: sync its write-ahead log: %v", a.id, err)
		}
	}
	a.w = w
	a.seq = seq
	a.dur.seq = seq
	a.sched.a = a
	// The shard's file is the truth about its alarms: fix the index on
	// every activation (a shard received, restored or left early).
	a.reindexAlarms()
	a.reindexQueues()
	a.mailbox = newMailbox(a.h.cfg.MailboxSize)
	a.writerDone = make(chan struct{})
	go a.runWriter()
	a.h.m.activations.Inc()
	return nil
}

// dropUnregistered settles a registration that can never name this node
// (refused, or another node holds the shard): the closed file goes if it
// was just created or was never served — one a registration in doubt
// left; a file with data in it is never deleted on that account.
func (a *actor) dropUnregistered(created bool) error {
	remove := created
	if !remove {
		remove, _ = neverServed(a.path)
	}
	if remove {
		if err := a.h.removeShardFiles(a.id); err != nil {
			return err
		}
	}
	a.h.settled(a.id)
	return nil
}

// neverServed reports whether the shard file at path was never served:
// it does not record a registration (__lunora_meta 'registered') and holds
// no committed mutation (seq 0) — a file a failed registration left. A
// file that cannot be read counts as served, so nothing is deleted on a
// guess; neither is any file with data in it.
func neverServed(path string) (bool, string) {
	c, err := sqlitex.Open(path, sqlitex.Options{Synchronous: "FULL", CacheKiB: 64, ReadOnly: true, MaxSQLLen: 1 << 10})
	if err != nil {
		return false, "open: " + err.Error()
	}
	defer c.Close()
	_, rows, err := c.QueryRows(context.Background(), "SELECT (SELECT v FROM __lunora_meta WHERE k = 'registered'), (SELECT v FROM __lunora_meta WHERE k = 'seq')", nil, sqlitex.Limits{MaxRows: 1, MaxBytes: 64})
	if err != nil || len(rows) != 1 {
		return false, fmt.Sprintf("read: %v", err)
	}
	return rows[0][0] == nil && rows[0][1] == int64(0), fmt.Sprintf("registered=%v seq=%v", rows[0][0], rows[0][1])
}

func hasFile(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// syncDirs fsyncs dir and each parent up to and including stop.
func syncDirs(dir, stop string) error {
	for {
		f, err := os.Open(dir)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
		if dir == stop || len(dir) <= len(stop) {
			return nil
		}
		dir = filepath.Dir(dir)
	}
}

// hibernate closes every handle. The actor is detached and unreferenced
// (Shutdown excepted: it detaches actors that live subscriptions still
// reference), so its mailbox is empty. Live queries stop first: their
// subscribers get a final error and the notifier returns its reader.
func (a *actor) hibernate() {
	a.stopLive()
	a.mailbox.close()
	<-a.writerDone
	a.closeIdleReaders()
	err := a.w.Close()
	if err != nil {
		a.h.log.Warn("close shard", "shard", a.id, "err", err)
	}
	if a.dur.wal != nil {
		a.dur.wal.Close()
	}
	if _, _, derr := a.dur.state(); err == nil && derr == nil {
		a.h.closedCleanly(a.id, a.path)
	}
}

// closeIdleReaders closes the read connections no one has checked out
// and frees their slots (a request opens one again).
func (a *actor) closeIdleReaders() {
	for {
		select {
		case r := <-a.readers:
			r.Close()
			<-a.readerSlot
		default:
			return
		}
	}
}

func (a *actor) String() string { return fmt.Sprintf("shard %s", a.id) }
