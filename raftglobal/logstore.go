package raftglobal

import (
	"errors"

	"github.com/hashicorp/go-hclog"

	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// walStore is the Raft log and stable store: a raft-wal WAL and the bbolt
// metadata file it keeps beside its segments. Close closes both: raft-wal
// v0.4.0 left the metadata file open (its flock blocked a reopen in the
// same process); v0.4.1 closes it itself, and closing it again is a no-op.
type walStore struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
}

func openWAL(dir string, segmentSize int, logger hclog.Logger) (walStore, error) {
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(dir, raftwal.WithMetaStore(meta), raftwal.WithSegmentSize(segmentSize), raftwal.WithLogger(logger))
	if err != nil {
		meta.Close()
		return walStore{}, err
	}
	return walStore{w, meta}, nil
}

func (s walStore) Close() error {
	return errors.Join(s.WAL.Close(), s.meta.Close())
}
