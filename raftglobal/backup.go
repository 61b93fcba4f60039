package raftglobal

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	sqlite3 "github.com/mattn/go-sqlite3"
)

// Backup copies the global tier's state machine — the SQLite database the
// FSM applies entries to — into a new file at path and returns the Raft
// index the copy holds (every entry up to it applied, none after) and
// whether the copy is strongly consistent. On the leader the copy is taken
// after a read index (a linearizable read): it holds every global write
// acknowledged before Backup was called. On a follower, or a leader that
// cannot confirm its leadership, it is this replica's applied state, which
// may lag the leader (strong is then false).
//
// The copy is taken as a Raft snapshot pins its state: a read transaction
// on a fresh read-only connection, while Apply goes on.
func (s *Store) Backup(ctx context.Context, path string) (index uint64, strong bool, err error) {
	strong = s.ready(ctx, api.ReadOptions{Consistency: api.Strong}) == nil
	select {
	case <-s.closed:
		return 0, false, ErrClosed
	default:
	}
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return 0, false, err
	}
	fs := snap.(*fsmSnapshot)
	defer fs.Release()
	if _, err := sqlitex.BackupInto(fs.c, path); err != nil {
		return 0, false, fmt.Errorf("global tier backup: %w", err)
	}
	return fs.index, strong, nil
}

// SeedFromBackup makes dir (a node's global tier directory, Config.Dir,
// which must hold no Raft state yet) start from db, a copy Backup made: it
// writes db as the newest Raft snapshot, at the index db holds, whose
// configuration is one voter, nodeID at raftAddr. A node opened on dir then
// restores its state machine from it and elects itself; it is a new
// one-voter global tier holding the backed-up state (other nodes can join
// it). It returns the index.
func SeedFromBackup(dir, nodeID, raftAddr, db string) (uint64, error) {
	if err := checkSnapshotFile(db); err != nil {
		return 0, err
	}
	index, err := backupIndex(db)
	if err != nil {
		return 0, err
	}
	if index == 0 {
		return 0, fmt.Errorf("%s holds no applied entry", db)
	}
	for _, sub := range []string{"raft", "snapshots", "fsm"} {
		if ents, err := os.ReadDir(filepath.Join(dir, sub)); err == nil && len(ents) > 0 {
			return 0, fmt.Errorf("%s already holds global tier state (%s): restore into a fresh data directory", dir, sub)
		}
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 1, io.Discard)
	if err != nil {
		return 0, err
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(nodeID), Address: raft.ServerAddress(raftAddr)}}}
	// (Create encodes the peers in the old format through a transport; an
	// in-memory one encodes an address as the TCP transport does.)
	_, trans := raft.NewInmemTransport(raft.ServerAddress(raftAddr))
	defer trans.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, conf, index, trans)
	if err != nil {
		return 0, err
	}
	in, err := os.Open(db)
	if err != nil {
		sink.Cancel()
		return 0, err
	}
	defer in.Close()
	if _, err := io.Copy(sink, in); err != nil {
		sink.Cancel()
		return 0, err
	}
	return index, sink.Close()
}

func backupIndex(db string) (uint64, error) {
	dc, err := sqliteDriver.Open("file:" + db + "?mode=ro")
	if err != nil {
		return 0, err
	}
	defer dc.Close()
	rows, err := dc.(*sqlite3.SQLiteConn).Query("SELECT v FROM __lunora_raft WHERE k = 'applied_index'", nil)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	v := make([]driver.Value, 1)
	if err := rows.Next(v); err != nil {
		return 0, fmt.Errorf("%s: read applied index: %w", db, err)
	}
	n, ok := v[0].(int64)
	if !ok || n < 0 {
		return 0, fmt.Errorf("%s: applied index %v is not a number", db, v[0])
	}
	return uint64(n), nil
}
