package shardhost

import (
	"context"
	"path/filepath"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// ErrNoShardFile: Backup was asked for a shard this node has no file of
// (never created here, or handed off).
var ErrNoShardFile = api.New(codes.NotFound, "no file of this shard on this node")

// Backup copies one shard into a new file at path while it serves: the
// copy is one read transaction's snapshot of the shard (SQLite's online
// backup on one of the shard's read connections, WAL mode), so it holds
// every write committed before the copy began and none half-done. It
// returns the commit sequence number of that snapshot and the copy's size.
//
// The copy holds a reference on the shard like a request: the shard does
// not hibernate meanwhile and a handoff's Freeze waits for the copy to
// finish. A shard with no file here is ErrNoShardFile, one frozen for a
// handoff is waited for, and one handed off meanwhile is Elsewhere.
func (h *Host) Backup(ctx context.Context, shardID, path string) (seq uint64, size int64, err error) {
	group, key, err := h.cfg.App.ParseShardID(shardID)
	if err != nil {
		return 0, 0, err
	}
	if group == schema.GlobalGroup {
		return 0, 0, errGlobalNotShard
	}
	if group == schema.RootShard {
		shardID = schema.RootShard
	}
	// Never create (or pull) a shard to back it up.
	if !hasFile(h.shardPath(shardID)) && !hasFile(h.shardPath(shardID)+".incoming") {
		return 0, 0, api.Wrap(ErrNoShardFile, "shard "+shardID)
	}
	a, err := h.acquire(ctx, shardID, group, key)
	if err != nil {
		return 0, 0, err
	}
	defer h.release(a)
	r, err := a.reader(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer func() { a.readers <- r }()
	r.Reset()
	if _, err := r.ExecSys("BEGIN"); err != nil {
		return 0, 0, r.Classify(err, a.id)
	}
	defer r.ExecSys("COMMIT")
	_, rows, err := r.QueryRows(ctx, "SELECT v FROM __lunora_meta WHERE k = 'seq'", nil, sqlitex.Limits{MaxRows: 1, MaxBytes: 64})
	if err != nil || len(rows) != 1 {
		return 0, 0, api.Errorf(codes.Internal, "shard %s: read commit sequence: %v", a.id, err)
	}
	seq = uint64(asInt(rows[0][0]))
	// A backup never holds a commit that is not durable (I2; syncer.go).
	if err := a.waitDurableSeq(ctx, seq); err != nil {
		return 0, 0, err
	}
	size, err = sqlitex.BackupInto(r, path)
	if err != nil {
		return 0, 0, api.Errorf(codes.Internal, "shard %s: %v", a.id, err)
	}
	return seq, size, nil
}

// ShardFile is where shardID's file lives, relative to the data directory
// (shards/ab/cd/<hash>.db): a restore puts a backed-up copy there.
func (h *Host) ShardFile(shardID string) string {
	if group, _, err := h.cfg.App.ParseShardID(shardID); err == nil && group == schema.RootShard {
		shardID = schema.RootShard
	}
	rel, _ := filepath.Rel(h.cfg.Dir, h.shardPath(shardID))
	return filepath.ToSlash(rel)
}
