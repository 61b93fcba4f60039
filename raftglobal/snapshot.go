package raftglobal

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/sqlitex"
	sqlite3 "github.com/mattn/go-sqlite3"
)

var sqliteDriver = &sqlite3.SQLiteDriver{}

// Snapshot implements raft.FSM. It only pins the current state: a read
// transaction on a fresh read-only connection, opened while Raft holds
// Apply back, so it sees exactly the entries applied so far. Persist copies
// that state with SQLite's online backup while Apply goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.swap.RLock()
	c, err := sqlitex.Open(f.path, f.connOptions(true))
	if err != nil {
		f.swap.RUnlock()
		return nil, err
	}
	ctx := context.Background()
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		c.Close()
		f.swap.RUnlock()
		return nil, err
	}
	// The first read starts the read transaction: from here on c sees this
	// state, whatever the writer commits.
	idx, err := storedIndex(ctx, c)
	if err != nil {
		c.Close()
		f.swap.RUnlock()
		return nil, err
	}
	return &fsmSnapshot{f: f, c: c, index: idx}, nil
}

// fsmSnapshot is one pinned state being persisted. Raft calls Persist at
// most once, then Release, from its snapshot goroutine.
type fsmSnapshot struct {
	f        *fsm
	c        *sqlitex.Conn
	index    uint64
	released bool
}

// Persist copies the pinned state into a temporary file with the online
// backup API (it reuses the open read transaction, so the copy is that
// state) and streams the file to the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	size, err := s.persist(sink)
	if err != nil {
		sink.Cancel()
		s.f.log.Error("snapshot failed", "index", s.index, "error", err)
		return err
	}
	s.f.m.snapshotDuration.Observe(time.Since(start).Seconds())
	s.f.m.snapshotSize.Set(float64(size))
	s.f.log.Info("snapshot persisted", "file_index", s.index, "bytes", size, "took", time.Since(start))
	return sink.Close()
}

func (s *fsmSnapshot) persist(sink raft.SnapshotSink) (int64, error) {
	tmp := filepath.Join(s.f.dir, fmt.Sprintf("snapshot-%d.tmp", s.index))
	defer os.Remove(tmp)
	if _, err := sqlitex.BackupInto(s.c, tmp); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	in, err := os.Open(tmp)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	return io.Copy(sink, in)
}

// Release ends the read transaction and lets Restore swap the file again.
func (s *fsmSnapshot) Release() {
	if s.released {
		return
	}
	s.released = true
	s.c.Exec(context.Background(), "COMMIT")
	s.c.Close()
	s.f.swap.RUnlock()
}

// Restore implements raft.FSM: it replaces the FSM's file with the
// snapshot's database. The snapshot is written to a temporary file and made
// durable first; then, with every connection closed, the old file's WAL is
// removed and the new file renamed over the old one — a crash leaves either
// the old database or the new one, whole.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	start := time.Now()
	tmp := filepath.Join(f.dir, fmt.Sprintf("restore-%d.tmp", time.Now().UnixNano()))
	defer os.Remove(tmp)
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, rc)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write snapshot to %s: %w", tmp, err)
	}
	if err := checkSnapshotFile(tmp); err != nil {
		return err
	}

	f.swap.Lock()
	defer f.swap.Unlock()
	f.closeReaders()
	if f.w != nil {
		if err := f.w.Close(); err != nil {
			return fmt.Errorf("close FSM file: %w", err)
		}
		f.w = nil
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Remove(f.path + suffix); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return err
	}
	if err := syncDir(f.dir); err != nil {
		return err
	}
	if err := f.openWriter(); err != nil {
		return err
	}
	f.restores.Add(1)
	f.log.Info("FSM restored from snapshot", "file_index", f.applied.Load(), "bytes", n, "took", time.Since(start))
	return nil
}

// checkSnapshotFile opens a received snapshot and checks it is one of ours.
func checkSnapshotFile(path string) error {
	dc, err := sqliteDriver.Open("file:" + path + "?mode=ro")
	if err != nil {
		return fmt.Errorf("snapshot is not a SQLite database: %w", err)
	}
	defer dc.Close()
	c := dc.(*sqlite3.SQLiteConn)
	rows, err := c.Query("SELECT v FROM __lunora_raft WHERE k = 'applied_index'", nil)
	if err != nil {
		return fmt.Errorf("snapshot is not a global tier database: %w", err)
	}
	return rows.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
