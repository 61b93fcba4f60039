package sqlitex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestClaimSQL(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want any
	}{
		{"x", "x"},
		{float64(3), int64(3)},
		{float64(-2), int64(-2)},
		{1.25, 1.25},
		{float64(1 << 60), float64(1 << 60)}, // beyond exact float integers: stays REAL
		{json.Number("12"), int64(12)},
		{json.Number("1.5"), 1.5},
		{int64(9), int64(9)},
		{true, int64(1)},
		{false, int64(0)},
		{nil, nil},
		{[]any{"a", float64(2)}, `["a",2]`},
		{map[string]any{"b": 1, "a": []any{}}, `{"a":[],"b":1}`},
	} {
		if got := claimSQL(tc.in); got != tc.want {
			t.Errorf("claimSQL(%#v) = %#v; want %#v", tc.in, got, tc.want)
		}
	}
}

func openTest(t testing.TB) *Conn {
	t.Helper()
	c, err := Open(":memory:", Options{Synchronous: "OFF", CacheKiB: 2048, MaxSQLLen: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLunoraAuthFunction(t *testing.T) {
	c := openTest(t)
	ctx := context.Background()
	c.User = true
	q := "SELECT lunora_auth(), lunora_auth('sub'), lunora_auth('n'), lunora_auth(NULL), lunora_auth('absent')"
	lim := Limits{MaxRows: 10, MaxBytes: 1 << 20}
	_, rows, err := c.QueryRows(ctx, q, nil, lim)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range rows[0] {
		if v != nil {
			t.Fatalf("no caller: column %d = %#v", i, v)
		}
	}
	c.Caller = Caller{Known: true, Subject: "u1", Claims: map[string]any{"sub": "u1", "n": float64(5)}}
	_, rows, err = c.QueryRows(ctx, q, nil, lim)
	if err != nil {
		t.Fatal(err)
	}
	if rows[0][0] != "u1" || rows[0][1] != "u1" || rows[0][2] != int64(5) || rows[0][3] != nil || rows[0][4] != nil {
		t.Fatalf("caller u1: %#v", rows[0])
	}
	// A caller with an empty subject has no subject.
	c.Caller = Caller{Known: true}
	if _, rows, _ = c.QueryRows(ctx, q, nil, lim); rows[0][0] != nil {
		t.Fatalf("empty subject: %#v", rows[0][0])
	}
	if _, _, err := c.QueryRows(ctx, "SELECT lunora_auth(1)", nil, lim); err == nil || !strings.Contains(err.Error(), "claim name must be text") {
		t.Fatalf("lunora_auth(1): %v", err)
	}
	if _, _, err := c.QueryRows(ctx, "SELECT lunora_auth('a', 'b')", nil, lim); err == nil {
		t.Fatal("lunora_auth with two arguments must not prepare")
	}

	// NoCaller makes the sandbox refuse it, with the reason.
	c.NoCaller = "not here"
	c.Reset()
	_, _, err = c.QueryRows(ctx, "SELECT lunora_auth('x') AS other_text", nil, lim)
	if err == nil {
		t.Fatal("lunora_auth ran with NoCaller set")
	}
	if cerr := c.Classify(err, "s"); !errors.Is(cerr, ErrSandbox) || !strings.Contains(cerr.Error(), "lunora_auth() is not available here: not here") {
		t.Fatalf("NoCaller: %v", cerr)
	}
}

// BenchmarkLunoraAuthScan: a filter on lunora_auth over 10,000 rows costs
// about what the same filter on a literal costs — the call is evaluated
// once per run of the statement, not per row:
//
//	go test -run '^$' -bench BenchmarkLunoraAuthScan -benchtime 200x ./sqlitex/
func BenchmarkLunoraAuthScan(b *testing.B) {
	const rows = 10000
	setup := "CREATE TABLE t(s TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < " + fmt.Sprint(rows) + ") INSERT INTO t SELECT 'u' || (i % 100) FROM n"
	for _, q := range []struct{ name, sql string }{
		{"literal", "SELECT count(*) FROM t WHERE s = 'u7'"},
		{"lunora_auth", "SELECT count(*) FROM t WHERE s = lunora_auth('sub')"},
	} {
		b.Run(q.name, func(b *testing.B) {
			c := openTest(b)
			if _, err := c.Exec(context.Background(), setup); err != nil {
				b.Fatal(err)
			}
			c.Caller = Caller{Known: true, Subject: "u7", Claims: map[string]any{"sub": "u7"}}
			c.User = true
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, out, err := c.QueryRows(context.Background(), q.sql, nil, Limits{MaxRows: 1, MaxBytes: 64})
				if err != nil {
					b.Fatal(err)
				}
				if out[0][0] != int64(rows/100) {
					b.Fatalf("count %v", out[0][0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
		})
	}
}
