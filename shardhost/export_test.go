package shardhost

import (
	"fmt"
	"github.com/lunora/lunora/sqlitex"
	"time"
)

// QueuedLen reports the mutations waiting in every active shard's mailbox.
func QueuedLen(h *Host) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, a := range h.actors {
		select {
		case <-a.ready:
			if a.err == nil {
				n += a.mailbox.len()
			}
		default:
		}
	}
	return n
}

func DebugActors(h *Host) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := ""
	i := 0
	for e := h.lru.Back(); e != nil && i < 5; e = e.Prev() {
		a := e.Value.(*actor)
		s += fmt.Sprintf("%s refs=%d idle=%v; ", a.id, a.refs, time.Since(a.lastUsed))
		i++
	}
	return s + fmt.Sprintf(" lru=%d map=%d closing=%d", h.lru.Len(), len(h.actors), len(h.closing))
}

// ShardPath is the file of shardID on h.
func ShardPath(h *Host, shardID string) string { return h.shardPath(shardID) }

// QueueHints lists the node's durable queue hints as "shard/queue".
func QueueHints(h *Host) []string {
	h.alarms.mu.Lock()
	defer h.alarms.mu.Unlock()
	var out []string
	for k := range h.alarms.queues.stored {
		out = append(out, k.shard+"/"+k.queue)
	}
	return out
}

// WriterMemory is the SQLite memory of an active shard's writer.
func WriterMemory(h *Host, shardID string) sqlitex.ConnMemory {
	h.mu.Lock()
	a := h.actors[shardID]
	h.mu.Unlock()
	if a == nil || a.w == nil {
		return sqlitex.ConnMemory{}
	}
	return a.w.Memory()
}

// DurabilityHooks are the node durability path's crash points (syncer.go).
type DurabilityHooks struct {
	BeforeSync     func()
	AfterShardSync func(shardID string)
	AfterSync      func()
	AfterAcks      func()
	// SyncFS makes rounds use one syncfs instead of an fdatasync per -wal.
	SyncFS bool
}

// SetDurabilityHooks installs crash-point hooks on cfg.
func SetDurabilityHooks(cfg *Config, d DurabilityHooks) {
	cfg.crash = crashHooks{beforeSync: d.BeforeSync, afterShardSync: d.AfterShardSync, afterSync: d.AfterSync, afterAcks: d.AfterAcks, syncfs: d.SyncFS}
}

// SyncedWALLens reports, for every active shard (by file path), the length
// of its -wal file at its last fdatasync: what a power cut keeps.
func SyncedWALLens(h *Host) map[string]int64 {
	h.mu.Lock()
	var as []*actor
	for _, a := range h.actors {
		select {
		case <-a.ready:
			if a.err == nil {
				as = append(as, a)
			}
		default:
		}
	}
	h.mu.Unlock()
	out := map[string]int64{}
	for _, a := range as {
		a.dur.mu.Lock()
		out[a.path] = a.dur.syncedLen
		a.dur.mu.Unlock()
	}
	return out
}
