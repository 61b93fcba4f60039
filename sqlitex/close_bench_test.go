package sqlitex_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lunora/lunora/sqlitex"
)

// BenchmarkOpenClose opens and closes one connection while `open` others
// (each on a file of its own) stay open, as the connections of other
// active shards do. Its cost should not grow with them; the driver's
// callback registration made every close scan all connections'
// callbacks.
//
//	go test -run '^$' -bench BenchmarkOpenClose -benchtime 2000x ./sqlitex/
func BenchmarkOpenClose(b *testing.B) {
	for _, open := range []int{0, 6000} {
		b.Run(fmt.Sprintf("open=%d", open), func(b *testing.B) {
			dir := b.TempDir()
			opts := sqlitex.Options{Synchronous: "NORMAL", CacheKiB: 64, MaxSQLLen: 1 << 12}
			var held []*sqlitex.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for i := range open {
				c, err := sqlitex.Open(filepath.Join(dir, fmt.Sprintf("held-%d.db", i)), opts)
				if err != nil {
					b.Skipf("open %d connections: %v (raise ulimit -n)", open, err)
				}
				held = append(held, c)
			}
			path := filepath.Join(dir, "x.db")
			b.ResetTimer()
			for b.Loop() {
				c, err := sqlitex.Open(path, opts)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
