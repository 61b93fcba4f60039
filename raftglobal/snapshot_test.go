package raftglobal

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
)

// TestRestartFromSnapshotAndLog: with a log much longer than the snapshot
// threshold, the log is compacted; a full restart recovers every write
// without applying the history again; a node whose FSM file is lost
// restores the snapshot and replays only the tail; a node joined after
// compaction is brought up by a snapshot install.
func TestRestartFromSnapshotAndLog(t *testing.T) {
	const writes = 500
	c := NewTestCluster(t, 3, 0, withSchema, func(cfg *Config) {
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 32
		cfg.SnapshotInterval = 50 * time.Millisecond
	})
	ctx := ctxT(t, 90*time.Second)
	leader := c.WaitForLeader(10 * time.Second)
	var last uint64
	for i := 0; i < writes; i++ {
		res, err := leader.Write(ctx, put(fmt.Sprintf("k%03d", i), int64(i)))
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		last = res.Seq
	}
	c.WaitForApplied(last, 10*time.Second)
	// Snapshots are taken and the log compacted on every node.
	waitFor(t, 20*time.Second, func() error {
		for _, id := range c.Live() {
			s := c.Node(id)
			first, _ := s.wal.FirstIndex()
			snaps, _ := s.snaps.List()
			if len(snaps) == 0 || first < 100 {
				return fmt.Errorf("%s: %d snapshots, log starts at %d", id, len(snaps), first)
			}
		}
		return nil
	})
	want, err := leader.Checksum(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, id := range c.IDs() {
		c.KillNode(id)
	}
	for _, id := range c.IDs() {
		c.RestartNode(id)
	}
	leader = c.WaitForLeader(10 * time.Second)
	res, err := leader.Read(ctx, api.ReadOptions{Consistency: api.Strong}, countKV())
	if err != nil || scalar(t, res) != writes {
		t.Fatalf("after a full restart: %+v %v", res, err)
	}
	c.WaitForApplied(leader.AppliedIndex(), 10*time.Second)
	for _, id := range c.Live() {
		st := c.Node(id).Stats().FSM
		t.Logf("%s after restart: %+v", id, st)
		// The only entries run are the ones written since (the new leader's
		// barrier); none of the 500 is applied again.
		if st.Executed > 3 {
			t.Errorf("%s re-applied %d entries after a restart", id, st.Executed)
		}
		sum, err := c.Node(id).Checksum(ctx)
		if err != nil || sum.Sum != want.Sum {
			t.Errorf("%s: checksum %+v after restart, want %+v (%v)", id, sum, want, err)
		}
	}

	// Lose one follower's FSM file: it restores the newest snapshot and
	// replays only the log after it.
	victim := c.Followers()[0]
	dir := c.Node(victim).fsm.dir
	c.KillNode(victim)
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(dir, "global.db"+suffix))
	}
	c.RestartNode(victim)
	res, err = leader.Write(ctx, put("after", 1))
	if err != nil {
		t.Fatal(err)
	}
	c.WaitForApplied(res.Seq, 10*time.Second)
	st := c.Node(victim).Stats().FSM
	t.Logf("%s after losing its FSM file: %+v", victim, st)
	if st.Restores != 1 || st.Executed > 2*64+3 {
		t.Errorf("%s: %+v, want one restore and only the tail applied", victim, st)
	}

	// A node that joins after compaction gets a snapshot install.
	added := c.AddNode(false)
	c.WaitForApplied(res.Seq, 10*time.Second, added)
	if st := c.Node(added).Stats().FSM; st.Restores != 1 {
		t.Errorf("%s joined without a snapshot install: %+v", added, st)
	}
	c.WaitForApplied(leader.AppliedIndex(), 10*time.Second)
	sums, err := c.Checksums(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref := sums[leader.NodeID()]
	for id, s := range sums {
		if s.Sum != ref.Sum {
			t.Errorf("%s: checksum %+v, leader %+v", id, s, ref)
		}
	}
}
