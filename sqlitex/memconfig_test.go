package sqlitex_test

import (
	"testing"

	"github.com/lunora/lunora/sqlitex"
)

// TestMemoryConfigured: the process-wide settings took (memconfig.go): a
// fresh connection's lookaside is the small one.
func TestMemoryConfigured(t *testing.T) {
	c, err := sqlitex.Open(":memory:", sqlitex.Options{Synchronous: "FULL", CacheKiB: 1024, MaxSQLLen: 1 << 12})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := sqlitex.MemoryUsed()
	c2, err := sqlitex.Open(":memory:", sqlitex.Options{Synchronous: "FULL", CacheKiB: 1024, MaxSQLLen: 1 << 12})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// 25 KiB measured; SQLite's defaults (48 KiB of lookaside) make it 64.
	grew := sqlitex.MemoryUsed() - before
	t.Logf("a new connection: %d KiB", grew>>10)
	if grew > 40<<10 {
		t.Errorf("a new connection allocated %d KiB", grew>>10)
	}
	if m := c2.Memory(); m.Schema < 0 || m.Cache < 0 {
		t.Errorf("Memory() = %+v", m)
	}
}
