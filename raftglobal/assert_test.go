package raftglobal

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
)

// TestAssertAndNowInEarlierStatements (issue 14): a command's earlier
// statements (run from the FSM's statement cache now) still stop the
// command when their lunora_assert fails — the error names the message and
// nothing of the command stays — and their lunora_now() is the entry's
// time, the same on every replica, run after run of the cached statement.
func TestAssertAndNowInEarlierStatements(t *testing.T) {
	c := NewTestCluster(t, 3, 0, withSchema)
	ctx := ctxT(t, 30*time.Second)
	leader := c.WaitForLeader(10 * time.Second)
	guarded := func(k string, ok int64) Command {
		return Command{SQL: []string{
			"SELECT lunora_assert(:ok, 'refused ' || :k)",
			"INSERT INTO rnd (id, t) VALUES (:id, lunora_now())",
			"INSERT INTO kv (k, v) VALUES (:k, (SELECT t FROM rnd WHERE id = :id))",
		}, Args: map[string]any{"ok": ok, "k": k, "id": int64(len(k))}}
	}
	_, err := leader.Write(ctx, guarded("no", 0))
	if !errors.Is(err, sqlitex.ErrAssert) || !strings.Contains(err.Error(), "refused no") {
		t.Fatalf("failing assert: %v; want ErrAssert naming the message", err)
	}
	res, err := leader.Read(ctx, api.ReadOptions{Consistency: api.Strong}, countKV())
	if err != nil || scalar(t, res) != 0 {
		t.Fatalf("a refused command left rows: %+v %v", res, err)
	}
	var seqs []uint64
	for _, k := range []string{"a", "bb", "ccc"} {
		r, err := leader.Write(ctx, guarded(k, 1))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, r.Seq)
	}
	c.WaitForApplied(seqs[len(seqs)-1], 10*time.Second)
	var want []int64
	for i, id := range c.IDs() {
		s := c.Node(id)
		var got []int64
		for _, k := range []string{"a", "bb", "ccc"} {
			r, err := s.Read(ctx, api.ReadOptions{Consistency: api.Stale}, get(k))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, scalar(t, r))
		}
		if got[0] <= 0 {
			t.Fatalf("replica %d: lunora_now() gave %v", i, got)
		}
		if i == 0 {
			want = got
		} else if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Fatalf("replica %d has lunora_now() values %v, replica 0 %v", i, got, want)
		}
	}
}
