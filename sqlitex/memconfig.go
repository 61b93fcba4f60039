package sqlitex

/*
typedef struct sqlite3 sqlite3;
int lunora_config_memory(int lookaside_size, int lookaside_slots, int pcache_initsz);
int lunora_db_status(sqlite3 *db, int op);
long long lunora_memory_used(void);
long long lunora_soft_heap_limit(long long n);
int lunora_db_release_memory(sqlite3 *db);
*/
import "C"

import (
	"fmt"
	"reflect"
)

// A node holds two or more SQLite connections per active shard, so what
// SQLite allocates per connection up front is multiplied by thousands
// (BENCHMARKS.md, "Memory per active shard"). By default every connection
// allocates 48 KiB of lookaside (its pool of small allocations) and a bulk
// of 20 page-cache lines when it opens, whether it uses them or not. Lunora
// sets, process-wide and before any connection opens:
//   - lookaside: 64 slots of 128 bytes (8 KiB) per connection;
//   - no bulk page-cache allocation: pages are allocated as they are used.
//
// Measured at 1,000 active chat shards (a write and a read each): 420 →
// 269 KiB of RSS per shard, with no change in mutation throughput.
const (
	lookasideSlotSize = 128
	lookasideSlots    = 64
	pageCacheInitSize = 0
)

func init() {
	if rc := C.lunora_config_memory(lookasideSlotSize, lookasideSlots, pageCacheInitSize); rc != 0 {
		panic(fmt.Sprintf("sqlitex: configure SQLite's memory: error %d", int(rc)))
	}
}

// SetSoftHeapLimit sets SQLite's process-wide soft heap limit: past it,
// SQLite recycles page-cache pages of every connection before it
// allocates more, so the page caches of all shards share one budget
// (schema, statements and pages in use are never freed: it is a soft
// limit). 0 removes the limit. It returns the previous limit.
func SetSoftHeapLimit(bytes int64) int64 { return int64(C.lunora_soft_heap_limit(C.longlong(bytes))) }

// MemoryUsed is the bytes SQLite has allocated in this process.
func MemoryUsed() int64 { return int64(C.lunora_memory_used()) }

// ConnMemory is what one connection holds in use, by SQLite's account
// (sqlite3_db_status), in bytes.
type ConnMemory struct {
	Lookaside, Cache, Schema, Stmt int
}

// handle is the connection's sqlite3 handle (nil once closed).
func (c *Conn) handle() *C.sqlite3 {
	db := reflect.ValueOf(c.C).Elem().FieldByName("db")
	if !db.IsValid() || db.Kind() != reflect.Pointer || db.IsNil() {
		return nil
	}
	return (*C.sqlite3)(db.UnsafePointer())
}

// ReleaseMemory frees the connection's page-cache pages that no statement
// holds (sqlite3_db_release_memory): an idle shard gives its cache back,
// and reads it from the OS page cache when it is used again. Connections
// are opened in SQLite's serialized mode, so this may run while another
// goroutine uses the connection, but never after Close.
func (c *Conn) ReleaseMemory() {
	if h := c.handle(); h != nil {
		C.lunora_db_release_memory(h)
	}
}

// Memory reports the connection's memory by kind.
func (c *Conn) Memory() ConnMemory {
	h := c.handle()
	if h == nil {
		return ConnMemory{}
	}
	// SQLITE_DBSTATUS_LOOKASIDE_USED 0, CACHE_USED 1, SCHEMA_USED 2, STMT_USED 3.
	return ConnMemory{Lookaside: int(C.lunora_db_status(h, 0)), Cache: int(C.lunora_db_status(h, 1)),
		Schema: int(C.lunora_db_status(h, 2)), Stmt: int(C.lunora_db_status(h, 3))}
}
