package shardhost

import (
	"context"
	"sync"
	"time"

	"github.com/lunora/lunora/sqlitex"
	"golang.org/x/sys/unix"
)

// runJanitor hibernates shards idle for longer than IdleTimeout.
func (h *Host) runJanitor() {
	defer h.janitor.Done()
	period := h.cfg.IdleTimeout / 2
	if period > time.Second {
		period = time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	var lastSettle time.Time
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			h.closeActors(h.idleActors(now))
			h.shedIdle(now)
			// Closing and shedding shards frees SQLite's memory into the
			// C allocator; hand it back to the OS here, off the request
			// path (writers shed after this tick: the next one trims).
			if h.closedSinceTrim.Swap(0) > 0 {
				sqlitex.TrimMemory()
			}
			// Settling may wait on the registry: off this loop, one
			// round at a time.
			if now.Sub(lastSettle) >= resolveEvery && len(h.Unsettled()) > 0 && h.settling.CompareAndSwap(false, true) {
				lastSettle = now
				h.janitor.Add(1)
				go func() {
					defer h.janitor.Done()
					defer h.settling.Store(false)
					h.SettleRegistrations()
				}()
			}
		}
	}
}

// idleActors detaches, oldest first, every unreferenced actor idle for
// longer than IdleTimeout.
func (h *Host) idleActors(now time.Time) []*actor {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*actor
	for e := h.lru.Back(); e != nil; {
		a := e.Value.(*actor)
		prev := e.Prev()
		if now.Sub(a.lastUsed) < h.cfg.IdleTimeout {
			break // the list is ordered by last use
		}
		if a.refs == 0 {
			out = append(out, h.detachLocked(a))
		}
		e = prev
	}
	return out
}

// shedIdle makes every active shard unused for ShedAfter give back its
// idle read connections, its writer's prepared statements and page
// cache, once per quiet spell: an active shard then costs little more
// than its writer connection's schema until it is used again or
// hibernates. The shard is referenced meanwhile, so it cannot close
// under the shedding.
func (h *Host) shedIdle(now time.Time) {
	if h.cfg.ShedAfter <= 0 {
		return
	}
	h.mu.Lock()
	var as []*actor
	for e := h.lru.Back(); e != nil; e = e.Prev() {
		a := e.Value.(*actor)
		if now.Sub(a.lastUsed) < h.cfg.ShedAfter {
			break // the list is ordered by last use
		}
		if a.shedAt.Equal(a.lastUsed) {
			continue // shed already, and not used since
		}
		a.shedAt = a.lastUsed
		a.refs++
		as = append(as, a)
	}
	h.mu.Unlock()
	for _, a := range as {
		a.shed()
		h.mu.Lock()
		a.refs-- // not release: the shard stays as idle as it was
		h.mu.Unlock()
	}
	h.m.sheds.Add(float64(len(as)))
	h.closedSinceTrim.Add(int64(len(as)))
}

// shed closes the actor's idle read connections (a request opens one
// again) and asks the writer to drop its prepared statements and free its
// page cache (it prepares them again when used). The caller holds a
// reference.
func (a *actor) shed() {
	a.closeIdleReaders()
	// Not waited for; a full mailbox means the shard is busy after all.
	a.mailbox.offer(&mutation{ctx: context.Background(), shed: true, done: make(chan struct{})}, a.id)
}

// overCapLocked detaches least recently used idle actors while more than
// MaxActive are open. Busy actors are skipped: the cap is exceeded rather
// than a request failed.
func (h *Host) overCapLocked() []*actor {
	var out []*actor
	for e := h.lru.Back(); e != nil && h.lru.Len() > h.cfg.MaxActive; {
		prev := e.Prev()
		if a := e.Value.(*actor); a.refs == 0 {
			out = append(out, h.detachLocked(a))
		}
		e = prev
	}
	return out
}

// detachLocked removes an unreferenced actor from the host's maps; its
// handles are closed by closeActors, outside the lock. A request for the
// shard that arrives meanwhile activates a new actor, which first waits for
// the old one's handles to close.
func (h *Host) detachLocked(a *actor) *actor {
	delete(h.actors, a.id)
	h.lru.Remove(a.elem)
	a.elem = nil
	a.closed = make(chan struct{})
	h.closing[a.id] = a.closed
	return a
}

// closeActors closes detached actors' handles, a few at a time: closing
// the last connection of a WAL database checkpoints it, which syncs.
func (h *Host) closeActors(as []*actor) {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, a := range as {
		sem <- struct{}{}
		wg.Add(1)
		go func(a *actor) {
			defer func() { <-sem; wg.Done() }()
			a.hibernate()
			h.alarms.forgetDrained(a.id)
			h.mu.Lock()
			if h.closing[a.id] == a.closed {
				delete(h.closing, a.id)
			}
			h.m.active.Set(float64(h.activeLocked()))
			h.mu.Unlock()
			close(a.closed)
			h.m.hibernations.Inc()
		}(a)
	}
	wg.Wait()
	h.closedSinceTrim.Add(int64(len(as)))
}

// activeLocked counts shards with open handles: activated ones and those
// still closing.
func (h *Host) activeLocked() int { return h.lru.Len() + len(h.closing) }

// A fileStamp identifies a closed shard's files: the database file's
// inode, size and modification time, and the -wal's inode. Every path
// that changes a closed shard's files either writes its -wal (which a
// clean close leaves empty), replaces a file (a new inode), or forgets
// the stamp (forgetClean).
type fileStamp struct {
	dbIno, dbSize, walIno uint64
	dbMtime               int64
}

func stampOf(path string) (fileStamp, bool) {
	var db, wal unix.Stat_t
	if unix.Stat(path, &db) != nil || unix.Stat(path+"-wal", &wal) != nil || wal.Size != 0 {
		return fileStamp{}, false
	}
	return fileStamp{dbIno: db.Ino, dbSize: uint64(db.Size), walIno: wal.Ino, dbMtime: db.Mtim.Nano()}, true
}

// matches reports whether the shard's files at path are as stamped, with
// an empty -wal.
func (s *fileStamp) matches(path string) bool {
	now, ok := stampOf(path)
	return ok && now == *s
}

// closedCleanly records that the shard's last connection closed without
// error and nothing failed to sync: its -wal is checkpointed, the
// database file synced, and the -wal kept, empty (sqlitex PersistWAL;
// the -shm is kept too, as SQLite leaves it). The stamp lets the next
// activation skip its syncs (openWAL).
func (h *Host) closedCleanly(id, path string) {
	st, ok := stampOf(path)
	if !ok {
		return
	}
	h.cleanMu.Lock()
	h.clean[id] = st
	h.cleanMu.Unlock()
}

// takeClean returns and forgets the shard's stamp (nil: none).
func (h *Host) takeClean(id string) *fileStamp {
	h.cleanMu.Lock()
	defer h.cleanMu.Unlock()
	st, ok := h.clean[id]
	if !ok {
		return nil
	}
	delete(h.clean, id)
	return &st
}

// forgetClean drops the shard's stamp: its files are about to change
// outside an actor (an install, a delete).
func (h *Host) forgetClean(id string) {
	h.cleanMu.Lock()
	delete(h.clean, id)
	h.cleanMu.Unlock()
}
