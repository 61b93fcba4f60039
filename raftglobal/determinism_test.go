package raftglobal

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

func TestCheckDeterministic(t *testing.T) {
	refused := []string{
		`INSERT INTO t VALUES (datetime('now'))`,
		`SELECT date('NOW')`,
		`SELECT julianday( 'now' )`,
		`SELECT unixepoch()`,
		`SELECT datetime()`,
		`SELECT strftime('%s')`,
		`SELECT strftime('%s', 'now')`,
		`SELECT datetime(x, 'localtime') FROM t`,
		`SELECT datetime(coalesce(x, 'now')) FROM t`,
		`INSERT INTO t (c) VALUES (CURRENT_TIMESTAMP)`,
		`SELECT current_date`,
		`UPDATE t SET c = Current_Time`,
		`SELECT time(  /* c */ )`,
	}
	for _, sql := range refused {
		err := CheckDeterministic(sql)
		if !errors.Is(err, ErrNonDeterministic) {
			t.Errorf("%s: %v, want refused", sql, err)
			continue
		}
		wantCode(t, err, codes.InvalidArgument)
	}
	allowed := []string{
		`SELECT datetime(lunora_now() / 1000, 'unixepoch')`,
		`SELECT strftime('%Y', :t, 'unixepoch')`,
		`INSERT INTO kv (k, v) VALUES ('now', 1)`,
		`SELECT 'datetime(''now'')'`,
		`SELECT "now", [current_date] FROM t -- datetime('now')`,
		`SELECT random(), randomblob(8)`,
		`SELECT date_trunc FROM t`,
		`SELECT date(:d)`,
	}
	for _, sql := range allowed {
		if err := CheckDeterministic(sql); err != nil {
			t.Errorf("%s: %v, want allowed", sql, err)
		}
	}
	if err := CheckArgsDeterministic(`SELECT date(:d)`, map[string]any{"d": "now"}); !errors.Is(err, ErrNonDeterministic) {
		t.Errorf("date(:d) with d=now: %v", err)
	}
	if err := CheckArgsDeterministic(`INSERT INTO kv (k, v) VALUES (:k, 1)`, map[string]any{"k": "now"}); err != nil {
		t.Errorf("'now' as a plain value: %v", err)
	}
}

// TestDeterminism: random(), randomblob() and lunora_now() give the same
// rows on every replica.
func TestDeterminism(t *testing.T) {
	c := NewTestCluster(t, 3, 1, withSchema)
	ctx := ctxT(t, 30*time.Second)
	leader := c.WaitForLeader(10 * time.Second)

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	var maxSeq uint64
	var mu sync.Mutex
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := leader.Write(ctx, Command{SQL: []string{
				`INSERT INTO rnd (id, r, b, t) VALUES (:id, random(), randomblob(8), lunora_now())`,
			}, Args: map[string]any{"id": int64(i)}})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			maxSeq = max(maxSeq, res.Seq)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.WaitForApplied(maxSeq, 10*time.Second)
	sums, err := c.Checksums(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var first Checksum
	for id, s := range sums {
		if first.Sum == "" {
			first = s
		}
		if s != first {
			t.Fatalf("replicas disagree: %s has %+v, another %+v", id, s, first)
		}
	}
	// The draws are random-looking: 16 distinct values.
	res, err := leader.Read(ctx, api.ReadOptions{Consistency: api.Strong}, Command{SQL: []string{
		`SELECT count(DISTINCT r), count(DISTINCT b), min(length(b)), min(t) FROM rnd`}})
	if err != nil {
		t.Fatal(err)
	}
	row := res.Rows[0]
	if row[0] != int64(16) || row[1] != int64(16) || row[2] != int64(8) {
		t.Fatalf("random draws: %v", row)
	}
	if now := time.Now().UnixMilli(); row[3].(int64) < now-60_000 || row[3].(int64) > now {
		t.Fatalf("lunora_now() = %v, not the leader's recent clock", row[3])
	}

	// datetime('now') never enters the log.
	before := leader.Stats().LastIndex
	_, err = leader.Write(ctx, Command{SQL: []string{`INSERT INTO kv (k, v) VALUES ('x', CAST(strftime('%s', 'now') AS INTEGER))`}})
	if !errors.Is(err, ErrNonDeterministic) {
		t.Fatalf("datetime('now') write: %v", err)
	}
	wantCode(t, err, codes.InvalidArgument)
	if after := leader.Stats().LastIndex; after != before {
		t.Fatalf("a refused write entered the log (%d → %d)", before, after)
	}
}
