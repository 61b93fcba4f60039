package sqlitex

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestAssertTruthiness (issue 14): lunora_assert, now in C, passes and
// fails on exactly the values the Go version did — NULL, 0, 0.0, ”, '0'
// and an empty blob are false — and a failure names its message (or
// "lunora_assert failed" for an empty one) through ErrAssert.
func TestAssertTruthiness(t *testing.T) {
	c := lunoraConn(t)
	cases := []struct {
		cond string
		ok   bool
	}{
		{"1", true}, {"-3", true}, {"0.5", true}, {"'a'", true}, {"'0.0'", true}, {"x'00'", true}, {"' '", true},
		{"NULL", false}, {"0", false}, {"0.0", false}, {"''", false}, {"'0'", false}, {"x''", false},
		{"1 = 1", true}, {"1 = 2", false},
	}
	for _, tc := range cases {
		c.Reset()
		v, err := lunoraValue(c, "SELECT lunora_assert("+tc.cond+", 'nope: "+strings.ReplaceAll(tc.cond, "'", "")+"')", nil)
		if tc.ok {
			if err != nil || v != int64(1) {
				t.Errorf("lunora_assert(%s): %v, %v; want 1", tc.cond, v, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("lunora_assert(%s) passed; want it to fail", tc.cond)
			continue
		}
		if got := c.Classify(err, "s"); !errors.Is(got, ErrAssert) || !strings.Contains(got.Error(), "nope: ") {
			t.Errorf("lunora_assert(%s): %v; want ErrAssert with the message", tc.cond, got)
		}
	}
	c.Reset()
	_, err := lunoraValue(c, "SELECT lunora_assert(0, '')", nil)
	if got := c.Classify(err, "s"); !errors.Is(got, ErrAssert) || !strings.Contains(got.Error(), "lunora_assert failed") {
		t.Errorf("lunora_assert(0, ''): %v; want ErrAssert naming lunora_assert", got)
	}
	c.Reset()
	_, err = lunoraValue(c, "SELECT lunora_assert(1, 5)", nil)
	if err == nil || !strings.Contains(err.Error(), "BLOB or TEXT") {
		t.Errorf("lunora_assert(1, 5): %v; want the message refused as not text", err)
	}
	// A bound argument, as the functions of lunora.yaml pass them.
	c.Reset()
	_, err = lunoraValue(c, "SELECT lunora_assert(:ok, 'bound')", []driver.NamedValue{{Name: "ok", Value: int64(0)}})
	if got := c.Classify(err, "s"); !errors.Is(got, ErrAssert) {
		t.Errorf("lunora_assert(:ok=0): %v; want ErrAssert", got)
	}
}

// TestNowFollowsConnNow: lunora_now() is Conn.Now in milliseconds when it
// is set — also when it changes between two runs of a cached statement —
// and the wall clock when it is zero.
func TestNowFollowsConnNow(t *testing.T) {
	c := lunoraConn(t)
	for _, at := range []time.Time{time.UnixMilli(1_700_000_000_123), time.UnixMilli(42), time.UnixMilli(-5)} {
		c.Now = at
		v, err := lunoraValue(c, "SELECT lunora_now()", nil)
		if err != nil || v != at.UnixMilli() {
			t.Fatalf("lunora_now() with Now=%v: %v, %v", at.UnixMilli(), v, err)
		}
	}
	c.Now = time.Time{}
	before := time.Now().UnixMilli()
	v, err := lunoraValue(c, "SELECT lunora_now()", nil)
	after := time.Now().UnixMilli()
	if n, ok := v.(int64); err != nil || !ok || n < before || n > after {
		t.Fatalf("lunora_now() on the wall clock: %v, %v; want within [%d, %d]", v, err, before, after)
	}
	// ExecSys and Exec see Now too.
	c.Now = time.UnixMilli(777)
	if _, err := c.Exec(context.Background(), "CREATE TABLE t(v INT); INSERT INTO t VALUES (lunora_now())"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecSys("INSERT INTO t VALUES (lunora_now())"); err != nil {
		t.Fatal(err)
	}
	_, rows, err := c.QueryRows(context.Background(), "SELECT v FROM t", nil, Limits{MaxRows: 10, MaxBytes: 1 << 10})
	if err != nil || len(rows) != 2 || rows[0][0] != int64(777) || rows[1][0] != int64(777) {
		t.Fatalf("rows %v, %v; want 777 twice", rows, err)
	}
}

// BenchmarkAssertNow is the cost of one statement calling lunora_assert
// and lunora_now, the two functions most mutations call:
//
//	go test -run '^$' -bench BenchmarkAssertNow -count 3 ./sqlitex/
func BenchmarkAssertNow(b *testing.B) {
	c, err := Open(":memory:", Options{Synchronous: "OFF", CacheKiB: 256, MaxSQLLen: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Now = time.UnixMilli(1)
	args := []driver.NamedValue{{Name: "x", Value: int64(1)}}
	lim := Limits{MaxRows: 10, MaxBytes: 1 << 10}
	c.User = true
	for b.Loop() {
		if _, _, err := c.QueryRows(context.Background(), "SELECT lunora_assert(:x, 'm'), lunora_now()", args, lim); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTotalChangesCountsRows: TotalChanges (sqlite3_total_changes64
// now) counts the rows every statement of the connection changed.
func TestTotalChangesCountsRows(t *testing.T) {
	c := lunoraConn(t)
	before, err := c.TotalChanges()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(context.Background(), "CREATE TABLE t(v INT); INSERT INTO t VALUES (1), (2), (3); UPDATE t SET v = v + 1 WHERE v > 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecSys("DELETE FROM t WHERE v = 1"); err != nil {
		t.Fatal(err)
	}
	after, err := c.TotalChanges()
	if err != nil || after-before != 3+2+1 {
		t.Fatalf("TotalChanges went from %d to %d (%v); want 6 more", before, after, err)
	}
}
