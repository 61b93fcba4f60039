package shardhost_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// withFunction adds a mutation to the chat app as if lunora.yaml declared
// it, bypassing load-time validation (which now refuses such SQL too): the
// runtime sandbox must hold on its own.
func withFunction(name string, sql ...string) func(*shardhost.Config) {
	return func(c *shardhost.Config) {
		base := c.App.Functions["messages:send"]
		fn := *base
		fn.Name, fn.SQL = name, sql
		c.App.Functions[name] = &fn
	}
}

// TestTransactionControlInFunctionIsRefusedUnderLoad: a function whose
// SQL list holds COMMIT (or BEGIN IMMEDIATE) used to get past the sandbox —
// the row stayed although the call failed, and ordinary mutations in the
// same batch were told "not applied" although they had committed. Now
// every such call is PERMISSION_DENIED and changes nothing, and every
// ordinary write beside it is acknowledged exactly when it is applied.
func TestTransactionControlInFunctionIsRefusedUnderLoad(t *testing.T) {
	insert := "INSERT INTO messages(room_id, author, body, created_at) VALUES (:room_id, :author, :body, lunora_now())"
	h := newHost(t, func(c *shardhost.Config) {
		withFunction("evil:commit", insert, "COMMIT", "SELECT lunora_assert(0, 'must roll back')")(c)
		withFunction("evil:begin", insert, "BEGIN IMMEDIATE", "SELECT 1")(c)
		withFunction("evil:rollback", insert, "ROLLBACK", "SELECT 1")(c)
		withFunction("evil:release", insert, "RELEASE m", "SELECT 1")(c)
	})
	ctx := context.Background()
	const writers, perWriter = 8, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	var failures []error
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				_, err := send(ctx, h, "load", fmt.Sprint("w", w), "ok")
				mu.Lock()
				if err == nil {
					acked++
				} else {
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		}(w)
	}
	evil := []string{"evil:commit", "evil:begin", "evil:rollback", "evil:release"}
	for i := 0; i < 60; i++ {
		fn := evil[i%len(evil)]
		_, err := h.Call(ctx, "room_id=load", fn, map[string]any{"room_id": "load", "author": "evil", "body": "x"})
		if api.CodeOf(err) != codes.PermissionDenied {
			t.Errorf("%s: got %v (%v), want PERMISSION_DENIED", fn, api.CodeOf(err), err)
		}
	}
	wg.Wait()
	for _, err := range failures {
		t.Errorf("ordinary write failed: %v", err)
	}
	if n := count(t, h, "load"); n != int64(acked) {
		t.Fatalf("rows = %d, acknowledged writes = %d", n, acked)
	}
	res, err := h.Exec(ctx, "room_id=load", "SELECT count(*) FROM messages WHERE author = 'evil'", nil)
	if err != nil || res.Rows[0][0] != int64(0) {
		t.Fatalf("rows written by refused calls: %+v %v", res, err)
	}
}

// TestRuntimeStatementTextsStaySandboxed: the runtime prepares its own
// statements (BEGIN IMMEDIATE, COMMIT, the registry marker) unsandboxed;
// user SQL with exactly the same text must still be judged by the
// sandbox, also while ordinary writers keep the runtime running them.
func TestRuntimeStatementTextsStaySandboxed(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	runtimeTexts := []string{
		"BEGIN IMMEDIATE",
		"BEGIN",
		"COMMIT",
		"ROLLBACK",
		"SAVEPOINT m",
		"RELEASE m",
		"ROLLBACK TO m",
		"INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('registered', 1)",
		"INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('registered', 2)",
		"UPDATE __lunora_meta SET v = 0 WHERE k = 'seq'",
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writeErr error
	var mu sync.Mutex
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := send(ctx, h, "meta", "w", "ok"); err != nil {
					mu.Lock()
					writeErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for round := 0; round < 20; round++ {
		for _, q := range runtimeTexts {
			_, err := h.Exec(ctx, "room_id=meta", q, nil)
			if api.CodeOf(err) != codes.PermissionDenied {
				t.Errorf("round %d: %q: got %v (%v), want PERMISSION_DENIED", round, q, api.CodeOf(err), err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("ordinary write failed: %v", writeErr)
	}
	res, err := h.Exec(ctx, "room_id=meta", "SELECT v FROM __lunora_meta WHERE k = 'registered'", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range res.Rows {
		if row[0] != int64(1) {
			t.Fatalf("registered marker changed: %v", row[0])
		}
	}
	res, err = h.Exec(ctx, "room_id=meta", "SELECT v FROM __lunora_meta WHERE k = 'seq'", nil)
	if err != nil || res.Rows[0][0] != int64(count(t, h, "meta")) {
		t.Fatalf("seq %+v %v does not match the row count", res, err)
	}
}

// TestTransactionControlRefusedAtLoad: lunora.yaml statements are checked
// in the shard sandbox when the file loads, naming the function.
func TestTransactionControlRefusedAtLoad(t *testing.T) {
	for _, stmt := range []string{"COMMIT", "BEGIN IMMEDIATE", "SAVEPOINT x", "PRAGMA writable_schema = 1", "INSERT INTO __lunora_meta(k, v) VALUES ('x', 1)", "UPDATE sqlite_master SET sql = ''"} {
		yaml := "tables:\n  t:\n    shard_by: k\n    columns: {k: text, v: int}\n    primary_key: [k]\nfunctions:\n  t:put:\n    kind: mutation\n    shard_by: k\n    args: {k: text}\n    sql:\n      - INSERT INTO t(k, v) VALUES (:k, 1)\n      - " + stmt + "\n"
		_, err := schema.Parse("lunora.yaml", []byte(yaml))
		if err == nil || !strings.Contains(err.Error(), "lunora.yaml:7:") || !strings.Contains(err.Error(), "t:put") ||
			!(strings.Contains(err.Error(), "not allowed") || strings.Contains(err.Error(), "no such table: __lunora_meta")) {
			t.Errorf("%s: load error %v, want a refusal naming the file, line and function", stmt, err)
		}
	}
}

// TestAdminReadsDoNotQueueBehindTheWriter: a read-only admin statement runs
// on a read connection, so it answers while the shard's writer is busy.
func TestAdminReadsDoNotQueueBehindTheWriter(t *testing.T) {
	hook, held, release := holdWriter("room_id=busy")
	h := newHost(t, func(c *shardhost.Config) { c.BeforeBatch = hook })
	defer release()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { _, err := send(ctx, h, "busy", "w", "first"); done <- err }()
	<-held // the writer is stuck inside a batch
	for i := 0; i < 16; i++ {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := h.Exec(cctx, "room_id=busy", "SELECT count(*) AS n FROM messages", nil)
		cancel()
		if err != nil || res.Rows[0][0] != int64(0) {
			t.Fatalf("admin read while the writer is busy: %+v %v", res, err)
		}
	}
	// A write still goes through the writer (and waits for it).
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := h.Exec(cctx, "room_id=busy", "DELETE FROM messages", nil)
	cancel()
	if api.CodeOf(err) != codes.DeadlineExceeded {
		t.Fatalf("admin write while the writer is held: %v, want DEADLINE_EXCEEDED", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestResultBoundCountsEncodedBytes: control characters take six bytes in
// JSON; the result bound counts them so.
func TestResultBoundCountsEncodedBytes(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) { c.MaxResultBytes = 1 << 20 })
	ctx := context.Background()
	// 400,000 raw bytes, 2,400,000 once encoded.
	_, err := h.Exec(ctx, "room_id=big", "SELECT printf('%.*c', 400000, char(1)) AS x", nil)
	if !errors.Is(err, shardhost.ErrResultTooLarge) {
		t.Fatalf("got %v, want result too large", err)
	}
	res, err := h.Exec(ctx, "room_id=big", "SELECT printf('%.*c', 400000, 'a') AS x", nil)
	if err != nil || len(res.Rows[0][0].(string)) != 400000 {
		t.Fatalf("plain text of the same length: %v", err)
	}
}

// TestResultBudgetIsNodeWide: results held at once share one budget; over
// it a call is refused with a retry hint, and the budget comes back.
func TestResultBudgetIsNodeWide(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) {
		c.ResultBudget = 3 << 20
		c.StatementTimeout = 3 * time.Second
	})
	ctx := context.Background()
	// A query holds 2 MB of the 3 MiB budget while it goes on counting
	// (until its time limit); meanwhile a 1.5 MB result on another shard,
	// which alone would fit, is refused with a retry hint.
	slow := make(chan error, 1)
	go func() {
		_, err := h.Exec(ctx, "room_id=b1", "SELECT printf('%.*c', 2000000, 'a') UNION ALL SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n) SELECT i FROM n)", nil)
		slow <- err
	}()
	waitFor(t, 10*time.Second, func() error {
		if n := h.ResultBytesInUse(); n < 2000000 {
			return fmt.Errorf("%d bytes in use", n)
		}
		return nil
	})
	_, err := h.Exec(ctx, "room_id=b2", "SELECT printf('%.*c', 1500000, 'a')", nil)
	var ae *api.Error
	if api.CodeOf(err) != codes.ResourceExhausted || !errors.As(err, &ae) || ae.RetryAfter == 0 {
		t.Fatalf("a result over what is left of the budget: %v, want RESOURCE_EXHAUSTED with a retry hint", err)
	}
	if err := <-slow; api.CodeOf(err) != codes.DeadlineExceeded {
		t.Fatalf("the holding query: %v, want its time limit", err)
	}
	// Every reservation comes back, and the same result now fits.
	if n := h.ResultBytesInUse(); n != 0 {
		t.Fatalf("%d bytes still reserved after every call returned", n)
	}
	if _, err := h.Exec(ctx, "room_id=b2", "SELECT printf('%.*c', 1500000, 'a')", nil); err != nil {
		t.Fatalf("budget not returned: %v", err)
	}
}

// TestLongFunctionCallsStopAtTheDeadline: LIKE, GLOB, instr, replace and
// trim on long strings run inside one SQLite opcode, where SQLite never
// looks for an interrupt; each must still stop within 100 ms of the
// statement's time limit, on a reader and on the writer, and the shard's
// writes go on at once. Under the race detector — Go code several times
// slower, and the whole suite sharing two cores — the bound asserted is
// 1 s; the figures without it are in BENCHMARKS.md.
func TestLongFunctionCallsStopAtTheDeadline(t *testing.T) {
	const limit = 300 * time.Millisecond
	slack := 100 * time.Millisecond
	if raceEnabled {
		slack = time.Second
	}
	h := newHost(t, func(c *shardhost.Config) { c.StatementTimeout = limit })
	ctx := context.Background()
	if _, err := send(ctx, h, "slow", "a", "seed"); err != nil {
		t.Fatal(err)
	}
	long := "printf('%.*c', 1000000, 'a')"
	pattern := "printf('%.*c', 20000, 'a')"
	exprs := map[string]string{
		"like":          long + " LIKE '%' || " + pattern + " || 'b'",
		"like escape":   long + " LIKE '%' || " + pattern + " || 'b' ESCAPE '!'",
		"glob":          long + " GLOB '*' || " + pattern + " || 'b'",
		"glob sets":     long + " GLOB '*' || replace(printf('%.*c', 15000, 'a'), 'a', '[a]') || 'b'",
		"like repeated": "(SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1000) SELECT i FROM n) WHERE " + long + " LIKE '%' || " + pattern + " || 'b')",
	}
	for name, expr := range exprs {
		for _, stmt := range []string{
			"SELECT " + expr + " AS x",
			"UPDATE messages SET body = 'y' WHERE " + expr,
		} {
			start := time.Now()
			_, err := h.Exec(ctx, "room_id=slow", stmt, nil)
			took := time.Since(start)
			if api.CodeOf(err) != codes.DeadlineExceeded {
				t.Errorf("%s (%.6s…): got %v (%v) after %v, want DEADLINE_EXCEEDED", name, stmt, api.CodeOf(err), err, took)
				continue
			}
			if over := took - limit; over > slack {
				t.Errorf("%s (%.6s…): stopped %v after its limit of %v", name, stmt, over, limit)
			}
			t.Logf("%s (%.6s…): stopped %v after the limit", name, stmt, took-limit)
		}
	}
	// The quadratic built-ins are linear now, and a pattern of many '%'
	// needs no backtracking past the last one: on the same inputs they
	// finish (within a 300 ms limit without the race detector; a shard
	// with a longer one here, so that a loaded machine cannot fail it).
	roomy := newHost(t, func(c *shardhost.Config) { c.StatementTimeout = 20 * time.Second })
	for name, expr := range map[string]string{
		"like many %": long + " LIKE replace(" + pattern + ", 'a', 'a%') || 'b'",
		"instr":       "instr(" + long + ", " + pattern + " || 'b')",
		"replace":     "length(replace(" + long + ", " + pattern + " || 'b', 'c'))",
		"trim":        "length(trim(" + long + ", printf('%.*c', 500000, 'b') || 'a'))",
	} {
		start := time.Now()
		if _, err := roomy.Exec(ctx, "room_id=slow", "SELECT "+expr, nil); err != nil {
			t.Errorf("%s: %v after %v", name, err, time.Since(start))
		}
		t.Logf("%s: %v", name, time.Since(start))
	}
	// Other long operations — sorts, DISTINCT, long linear built-ins —
	// either finish within the limit or stop within the slack of it.
	for _, q := range []string{
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000000) SELECT i FROM n ORDER BY random() LIMIT 1",
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 300000) SELECT count(DISTINCT printf('%.*c', 100, 'a') || i) FROM n",
		"SELECT length(upper(printf('%.*c', 16000000, 'a')))",
		"SELECT length(hex(randomblob(8000000)))",
		"SELECT json_valid(printf('%.*c', 8000000, '['))",
	} {
		start := time.Now()
		_, err := h.Exec(ctx, "room_id=slow", q, nil)
		took := time.Since(start)
		if err != nil && api.CodeOf(err) != codes.DeadlineExceeded || took > limit+slack {
			t.Errorf("%.60s…: %v after %v", q, err, took)
		}
	}
	start := time.Now()
	if _, err := send(ctx, h, "slow", "a", "after"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > slack {
		t.Fatalf("a write after the refusals took %v", took)
	}
}
