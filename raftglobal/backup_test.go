package raftglobal

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
)

// Backup on the leader is strong (it holds every acknowledged write), on a
// follower it is the replica's state; SeedFromBackup makes a fresh
// directory a one-voter group that serves the copy and takes writes.
func TestBackupAndSeed(t *testing.T) {
	c := NewTestCluster(t, 3, 0, withSchema)
	ctx := ctxT(t, 60*time.Second)
	leader := c.WaitForLeader(10 * time.Second)
	var last uint64
	for i := range 10 {
		res, err := leader.Write(ctx, put("k"+string(rune('a'+i)), int64(i)))
		if err != nil {
			t.Fatal(err)
		}
		last = res.Seq
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "global.db")
	idx, strong, err := leader.Backup(ctx, db)
	if err != nil || !strong || idx < last {
		t.Fatalf("leader backup: index %d (last write %d), strong %v, %v", idx, last, strong, err)
	}
	f := c.Node(c.Followers()[0])
	if _, strong, err := f.Backup(ctx, filepath.Join(dir, "follower.db")); err != nil || strong {
		t.Fatalf("follower backup: strong %v, %v", strong, err)
	}

	seeded := filepath.Join(t.TempDir(), "raft")
	got, err := SeedFromBackup(seeded, "r", "inmem-r", db)
	if err != nil || got != idx {
		t.Fatalf("seed: index %d (backup %d), %v", got, idx, err)
	}
	if _, err := SeedFromBackup(seeded, "r", "inmem-r", db); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("seeding a directory twice: %v", err)
	}
	cfg := DefaultLocalConfig()
	withSchema(&cfg)
	cfg.NodeID, cfg.Dir = "r", seeded
	_, cfg.Transport = raft.NewInmemTransport("inmem-r")
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.Read(ctx, api.ReadOptions{Consistency: api.Strong}, countKV())
	if err != nil || scalar(t, res) != 10 {
		t.Fatalf("seeded store: %v %v", res, err)
	}
	w, err := s.Write(ctx, put("after", 1))
	if err != nil || w.Seq <= idx {
		t.Fatalf("write on the seeded store: %v %v (backup index %d)", w, err, idx)
	}
}
