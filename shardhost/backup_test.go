package shardhost_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
)

// Backup copies a serving shard at one commit sequence, never creates a
// shard, and gives way to a handoff.
func TestBackupCopiesAServingShard(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	h := newHost(t, func(c *shardhost.Config) { c.NodeID, c.Dir, c.MoveWait = "a", dir, 10*time.Second })
	for range 3 {
		if _, err := send(ctx, h, "r1", "ada", "hi"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, h.ShardFile(r1))); err != nil {
		t.Fatalf("ShardFile %s: %v", h.ShardFile(r1), err)
	}
	out := filepath.Join(t.TempDir(), "copy.db")
	seq, size, err := h.Backup(ctx, r1, out)
	if err != nil || seq != 3 {
		t.Fatalf("backup: seq %d, %v", seq, err)
	}
	if st, err := os.Stat(out); err != nil || st.Size() != size {
		t.Fatalf("copy: %v %v, reported size %d", st, err, size)
	}
	db, err := sql.Open("sqlite3", "file:"+out+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var v int64
	if err := db.QueryRow("SELECT count(*) FROM messages").Scan(&n); err != nil || n != 3 {
		t.Fatalf("copy holds %d messages: %v", n, err)
	}
	if err := db.QueryRow("SELECT v FROM __lunora_meta WHERE k = 'seq'").Scan(&v); err != nil || v != 3 {
		t.Fatalf("copy's seq %d: %v", v, err)
	}
	db.Close()
	// The shard still serves and continues its sequence.
	if res, err := send(ctx, h, "r1", "ada", "after"); err != nil || res.Seq != 4 {
		t.Fatalf("write after the backup: %v %v", res, err)
	}

	// A shard with no file here is not created to be backed up.
	if _, _, err := h.Backup(ctx, "room_id=r9", filepath.Join(t.TempDir(), "x.db")); !errors.Is(err, shardhost.ErrNoShardFile) {
		t.Fatalf("backup of a shard never created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, h.ShardFile("room_id=r9"))); !os.IsNotExist(err) {
		t.Fatalf("the backup created r9's file: %v", err)
	}

	// A shard frozen for a handoff is waited for; once handed off it is
	// elsewhere (or, if the backup starts after the drop, has no file).
	f, err := h.Freeze(ctx, r1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := h.Backup(ctx, r1, filepath.Join(t.TempDir(), "moving.db"))
		done <- err
	}()
	if err := h.Drop(f, "b"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, shardhost.ErrNoShardFile) && shardhost.HolderOf(err) != "b" {
		t.Fatalf("backup of a shard handed off: %v", err)
	}
}
