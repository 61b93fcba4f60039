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
				n += len(a.mailbox)
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
