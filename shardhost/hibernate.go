package shardhost

import (
	"sync"
	"time"

	"github.com/lunora/lunora/sqlitex"
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
			// Closing shards frees SQLite's memory into the C allocator;
			// hand it back to the OS here, off the request path.
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
