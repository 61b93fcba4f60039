package sqlitex

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"testing"
)

// BenchmarkLikeScan compares a LIKE scan of 10,000 rows (60-byte texts)
// with SQLite's built-in LIKE against Lunora's interruptible one, in the
// same run:
//
//	go test -run '^$' -bench BenchmarkLikeScan -benchtime 200x -count 3 ./sqlitex/
func BenchmarkLikeScan(b *testing.B) {
	const rows = 10000
	setup := "CREATE TABLE t(s TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < " + fmt.Sprint(rows) + ") INSERT INTO t SELECT printf('%050d-%s', i, hex(randomblob(2))) FROM n"
	query := "SELECT count(*) FROM t WHERE s LIKE '%00123%'"
	b.Run("sqlite", func(b *testing.B) {
		dc, err := sqliteDriver.Open("file::memory:")
		if err != nil {
			b.Fatal(err)
		}
		defer dc.Close()
		c := dc.(interface {
			Exec(string, []driver.Value) (driver.Result, error)
			QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error)
		})
		if _, err := c.Exec(setup, nil); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			r, err := c.QueryContext(context.Background(), query, nil)
			if err != nil {
				b.Fatal(err)
			}
			dest := make([]driver.Value, 1)
			if err := r.Next(dest); err != nil && err != io.EOF {
				b.Fatal(err)
			}
			r.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
	})
	b.Run("lunora", func(b *testing.B) {
		c, err := Open(":memory:", Options{Synchronous: "OFF", CacheKiB: 2048, MaxSQLLen: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Exec(context.Background(), setup); err != nil {
			b.Fatal(err)
		}
		c.User = true
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, _, err := c.QueryRows(context.Background(), query, nil, Limits{MaxRows: 1, MaxBytes: 64}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
	})
}
