package raftglobal

import (
	"errors"
	"testing"
	"time"
)

// TestCronTicks: the tick state's compare-and-set. A tick is claimed once
// per leader, claimed again (counted) while not done, never once done or
// once a newer tick is claimed; a failure keeps it claimed; a follower
// neither reads nor writes it, and the state survives a leader change.
func TestCronTicks(t *testing.T) {
	c := NewTestCluster(t, 3, 0)
	ctx := ctxT(t, 30*time.Second)
	leader := c.WaitForLeader(10 * time.Second)

	state := func(s *Store) (int64, int64, bool) {
		t.Helper()
		claimed, done, found, err := s.CronTick(ctx, "beat")
		if err != nil {
			t.Fatal(err)
		}
		return claimed, done, found
	}
	if _, _, found := state(leader); found {
		t.Fatal("a cron never started has state")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	claim := func(tick int64, want bool) {
		t.Helper()
		got, err := leader.ClaimCronTick(ctx, "beat", tick)
		must(err)
		if got != want {
			t.Fatalf("claim of tick %d: %v, want %v", tick, got, want)
		}
	}
	must(leader.StartCron(ctx, "beat", 1000))
	must(leader.StartCron(ctx, "beat", 5000)) // a second start changes nothing
	if claimed, done, found := state(leader); !found || claimed != 1000 || done != 1000 {
		t.Fatalf("started: claimed %d done %d found %v", claimed, done, found)
	}
	claim(1000, false) // not after done
	claim(2000, true)
	claim(2000, true) // again, as a new leader would
	must(leader.FinishCronTick(ctx, "beat", 2000, "boom"))
	if claimed, done, _ := state(leader); claimed != 2000 || done != 1000 {
		t.Fatalf("after a failure: claimed %d done %d", claimed, done)
	}
	claim(3000, true) // supersedes the failing 2000
	claim(2000, false)
	must(leader.FinishCronTick(ctx, "beat", 3000, ""))
	claim(3000, false)
	res, err := leader.systemRead(ctx, nil, `SELECT claims, failures, last_error, claimed_by FROM __lunora_crons WHERE name = 'beat'`)
	must(err)
	if r := res.Rows[0]; r[0] != int64(1) || r[1] != int64(0) || r[2] != "" || r[3] != leader.NodeID() {
		t.Fatalf("row after success: %v", r)
	}

	follower := c.Node(c.Followers()[0])
	if _, err := follower.ClaimCronTick(ctx, "beat", 4000); err == nil {
		t.Fatal("a follower claimed a tick")
	}
	if _, _, _, err := follower.CronTick(ctx, "beat"); err == nil {
		t.Fatal("a follower served a linearizable read of the tick state")
	}
	// User SQL cannot write the table.
	if _, err := leader.Write(ctx, Command{SQL: []string{"UPDATE __lunora_crons SET done_tick_ms = 0"}}); err == nil {
		t.Fatal("user SQL wrote the cron state")
	}

	// Cut off, the leader steps down and says so; the new leader sees the
	// same state.
	changed := leader.LeaderChanged()
	c.Partition(leader.NodeID())
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("LeaderChanged never closed on the leader cut off")
	}
	waitFor(t, 10*time.Second, func() error {
		if leader.IsLeader() {
			return errors.New("the old leader still leads")
		}
		return nil
	})
	c.KillNode(leader.NodeID())
	next := c.WaitForLeader(10 * time.Second)
	waitFor(t, 10*time.Second, func() error {
		_, _, _, err := next.CronTick(ctx, "beat")
		return err
	})
	if claimed, done, _ := state(next); claimed != 3000 || done != 3000 {
		t.Fatalf("new leader: claimed %d done %d", claimed, done)
	}
}
