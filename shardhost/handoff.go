package shardhost

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// Handoff moves a shard's file between nodes (invariant I3: one live copy).
// The shard host does the local half of each step; the node runs the
// protocol between them:
//
//	sender                               receiver
//	Freeze: stop serving, close, journal
//	stream the file + SHA-256     ──►    Receive: write .incoming, fsync, verify, journal
//	                              ◄──    ack
//	registry: holder sender→receiver     (the commit point, through the global tier)
//	Drop: delete, forward pointer ──►    Install: rename .incoming into place, serve
//
// Each side journals its half in Dir/moves before it acts, so a crash of
// either side leaves an entry the node resolves at restart by asking the
// registry (through the log) who holds the shard: the holder keeps or
// installs its copy, the other deletes its own. Until an entry is resolved
// the shard is not served from this node.

// ErrShardMoving: the shard is being handed off; retry shortly.
var ErrShardMoving = &api.Error{Code: codes.Unavailable, Msg: "shard is moving between nodes", RetryAfter: 100 * time.Millisecond, Reason: api.ReasonShardMoving}

// MoveRole says which half of a handoff a journal entry records.
type MoveRole string

// The roles of a journal entry.
const (
	MoveSend MoveRole = "send"
	MoveRecv MoveRole = "recv"
)

// PendingMove is an unresolved journal entry.
type PendingMove struct {
	ShardID string
	Role    MoveRole
}

// Frozen is a shard that stopped serving on this node for a handoff: its
// file is closed, checkpointed and summed. End it with Thaw or Drop.
type Frozen struct {
	ShardID string
	Path    string
	Size    int64
	SHA256  [32]byte
}

// Open opens the frozen file for streaming.
func (f *Frozen) Open() (*os.File, error) {
	file, err := os.Open(f.Path)
	if err != nil {
		return nil, api.Errorf(codes.Internal, "shard %s: %v", f.ShardID, err)
	}
	return file, nil
}

// Elsewhere is the error for a shard another node holds. It is
// retryable (SHARD_MOVING): the node that owns the shard pulls it.
func Elsewhere(shardID, holder string) *api.Error {
	e := api.Wrap(ErrShardElsewhere, fmt.Sprintf("shard %s is held by node %s", shardID, holder))
	e.Reason, e.RetryAfter = api.ReasonShardMoving, 50*time.Millisecond
	e.Meta = map[string]string{"shard": shardID, "holder": holder}
	return e
}

// HolderOf returns the holder an ErrShardElsewhere names, or "".
func HolderOf(err error) string {
	var e *api.Error
	if errors.As(err, &e) && errors.Is(err, ErrShardElsewhere) {
		return e.Meta["holder"]
	}
	return ""
}

func (h *Host) movesDir() string { return filepath.Join(h.cfg.Dir, "moves") }

func (h *Host) journalPath(shardID string, role MoveRole) string {
	return filepath.Join(h.movesDir(), filepath.Base(h.shardPath(shardID))+"."+string(role))
}

// loadJournal reads the unresolved moves left by an earlier run.
func (h *Host) loadJournal() error {
	if err := os.MkdirAll(h.movesDir(), 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(h.movesDir())
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		role := MoveRole(strings.TrimPrefix(filepath.Ext(name), "."))
		if role != MoveSend && role != MoveRecv {
			continue
		}
		id, err := os.ReadFile(filepath.Join(h.movesDir(), name))
		if err != nil {
			return err
		}
		if len(id) == 0 {
			// A crash before the entry was complete: its step never began.
			os.Remove(filepath.Join(h.movesDir(), name))
			continue
		}
		h.recovered[string(id)] = role
	}
	return nil
}

func (h *Host) writeJournal(shardID string, role MoveRole) error {
	return writeMarker(h.movesDir(), h.journalPath(shardID, role), shardID)
}

// writeMarker durably writes a small file holding content at path (in
// dir): written to a temporary name, synced, renamed, dir synced.
func writeMarker(dir, path, content string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDirs(dir, dir)
}

func (h *Host) clearJournal(shardID string, role MoveRole) error {
	if err := os.Remove(h.journalPath(shardID, role)); err != nil && !os.IsNotExist(err) {
		return err
	}
	h.mu.Lock()
	if h.recovered[shardID] == role {
		delete(h.recovered, shardID)
	}
	h.mu.Unlock()
	return syncDirs(h.movesDir(), h.movesDir())
}

// PendingMoves lists the journal entries an earlier run left unresolved.
func (h *Host) PendingMoves() []PendingMove {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]PendingMove, 0, len(h.recovered))
	for id, role := range h.recovered {
		out = append(out, PendingMove{ShardID: id, Role: role})
	}
	return out
}

// ReceivedCopies lists the shards this node holds a received, not yet
// installed copy of (a receive journaled in this run or an earlier one).
func (h *Host) ReceivedCopies() []string {
	ents, err := os.ReadDir(h.movesDir())
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if filepath.Ext(e.Name()) != "."+string(MoveRecv) {
			continue
		}
		id, err := os.ReadFile(filepath.Join(h.movesDir(), e.Name()))
		if err == nil && len(id) > 0 {
			out = append(out, string(id))
		}
	}
	return out
}

// MovesInFlight counts the handoffs under way here: shards frozen to be
// sent, streams being received, and moves an earlier run left unresolved.
// (A copy received for a move whose sender then died before the commit
// point stays journaled but is not counted: it is never served unless the
// registry names this node, and the next run removes it.)
func (h *Host) MovesInFlight() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.frozen) + h.receiving + len(h.recovered)
}

// Freeze stops serving shardID for a handoff: requests that arrive wait
// (bounded by their deadline, then ErrShardMoving), those in flight finish,
// live queries end (their subscribers resume elsewhere), the file is closed
// and summed, and the send is journaled. The caller has read in the
// registry that this node holds the shard, so a copy received here but not
// installed yet (the previous sender's "done" still on its way) is
// installed first. NOT_FOUND when the shard has no file on this node;
// SHARD_MOVING while a handoff an earlier run journaled is unresolved.
func (h *Host) Freeze(ctx context.Context, shardID string) (*Frozen, error) {
	path := h.shardPath(shardID)
	h.mu.Lock()
	_, frozen := h.frozen[shardID]
	holder, moved := h.moved[shardID]
	_, pending := h.recovered[shardID]
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, ErrClosed
	case pending:
		// A handoff an earlier run began is not settled yet: it may have
		// committed, and this copy may be stale (ResolveMove decides).
		h.mu.Unlock()
		return nil, api.Wrap(ErrShardMoving, "shard "+shardID+": a handoff interrupted by a restart is being resolved")
	case frozen:
		// (Checked before the file: a move that is deleting it is still
		// frozen.)
		h.mu.Unlock()
		return nil, api.Wrap(ErrShardMoving, "a handoff of shard "+shardID+" is already under way")
	case !hasFile(path) && !hasFile(path+".incoming"):
		h.mu.Unlock()
		if moved {
			return nil, Elsewhere(shardID, holder)
		}
		return nil, api.Errorf(codes.NotFound, "shard %s: no file on node %s", shardID, h.cfg.NodeID)
	}
	h.frozen[shardID] = make(chan struct{})
	h.mu.Unlock()

	f, err := h.freeze(ctx, shardID, path)
	if err != nil {
		h.thaw(shardID)
		return nil, err
	}
	return f, nil
}

func (h *Host) freeze(ctx context.Context, shardID, path string) (*Frozen, error) {
	// Wait for every reference to go (requests finish, live queries end:
	// their subscribers resume on the new holder), then close the shard.
	for {
		h.mu.Lock()
		a := h.actors[shardID]
		closing := h.closing[shardID]
		activated := a != nil && a.elem != nil
		if activated && a.refs == 0 {
			h.detachLocked(a)
			h.mu.Unlock()
			h.closeActors([]*actor{a})
			continue
		}
		h.mu.Unlock()
		if a == nil && closing == nil {
			break
		}
		if a == nil {
			<-closing
			continue
		}
		if activated {
			a.stopLive() // subscriptions hold references
		}
		select {
		case <-ctx.Done():
			return nil, api.Errorf(codes.DeadlineExceeded, "shard %s: waiting for requests to finish before the handoff: %v", shardID, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	if !hasFile(path) {
		if err := h.installIncoming(shardID); err != nil {
			return nil, err
		}
	}
	if err := h.recoverWAL(shardID, path); err != nil {
		return nil, err
	}
	if err := h.writeJournal(shardID, MoveSend); err != nil {
		return nil, api.Errorf(codes.Internal, "shard %s: journal the handoff: %v", shardID, err)
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, api.Errorf(codes.Internal, "shard %s: %v", shardID, err)
	}
	defer file.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, file)
	if err != nil {
		return nil, api.Errorf(codes.Internal, "shard %s: read for checksum: %v", shardID, err)
	}
	out := &Frozen{ShardID: shardID, Path: path, Size: n}
	copy(out.SHA256[:], sum.Sum(nil))
	return out, nil
}

// recoverWAL checkpoints a shard file whose write-ahead log is not empty
// although no handle has it open: the process that last had it open died
// (SIGKILL, power loss) before closing it, so the WAL may hold committed
// transactions — acknowledged writes (I2) — that the main file does not
// have yet. Streaming the file alone would lose them, and refusing to move
// the shard would strand it on a node that no longer owns it, so the file
// is opened (SQLite replays the valid frames of the WAL and ignores a torn
// tail), checkpointed into the main file and closed (which deletes the
// WAL). The caller holds the shard frozen, so nothing else opens it.
func (h *Host) recoverWAL(shardID, path string) error {
	if st, err := os.Stat(path + "-wal"); err != nil || st.Size() == 0 {
		return nil
	}
	c, err := sqlitex.Open(path, h.connOptions(false))
	if err != nil {
		return api.Errorf(codes.Internal, "shard %s: open to recover its write-ahead log: %v", shardID, err)
	}
	_, err = c.C.Exec("PRAGMA wal_checkpoint(TRUNCATE)", nil)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return api.Errorf(codes.Internal, "shard %s: checkpoint its write-ahead log: %v", shardID, err)
	}
	if st, err := os.Stat(path + "-wal"); err == nil && st.Size() > 0 {
		return api.Errorf(codes.Internal, "shard %s: its write-ahead log still holds %d bytes after a checkpoint", shardID, st.Size())
	}
	h.log.Info("recovered a shard's write-ahead log left by a crash", "shard", shardID)
	h.m.walRecoveries.Inc()
	return nil
}

// refuseClosed is ErrClosed once Shutdown has begun: a host that has shut
// down touches none of its files again, as a killed process would not. (A
// move's goroutine can outlive the host in a process that goes on — the
// in-process test clusters restart a node in the same process.)
func (h *Host) refuseClosed() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	return nil
}

// Thaw ends a handoff that did not commit: the shard serves again here.
func (h *Host) Thaw(f *Frozen) error {
	if err := h.refuseClosed(); err != nil {
		return err
	}
	err := h.clearJournal(f.ShardID, MoveSend)
	h.thaw(f.ShardID)
	return err
}

func (h *Host) thaw(shardID string) {
	h.mu.Lock()
	ch := h.frozen[shardID]
	delete(h.frozen, shardID)
	h.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// Drop ends a handoff that committed: the file is deleted and requests for
// the shard are answered with ErrShardElsewhere naming holder.
func (h *Host) Drop(f *Frozen, holder string) error {
	if err := h.refuseClosed(); err != nil {
		return err
	}
	if err := h.removeShardFiles(f.ShardID); err != nil {
		return err
	}
	h.mu.Lock()
	h.moved[f.ShardID] = holder
	h.mu.Unlock()
	err := h.clearJournal(f.ShardID, MoveSend)
	h.thaw(f.ShardID)
	return err
}

// Redirect corrects the forward pointer a handoff left for shardID: the
// registry names holder as its holder now (a pointer only remembers where
// this node sent the shard, and the shard may have moved on since). An
// empty holder, or this node, drops the pointer. A shard with no pointer
// here is left alone.
func (h *Host) Redirect(shardID, holder string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.moved[shardID]; !ok {
		return
	}
	if holder == "" || holder == h.cfg.NodeID {
		delete(h.moved, shardID)
		return
	}
	h.moved[shardID] = holder
}

func (h *Host) removeShardFiles(shardID string) error {
	h.forgetClean(shardID)
	path := h.shardPath(shardID)
	existed := false
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		err := os.Remove(p)
		if err == nil && p == path {
			existed = true
		}
		if err != nil && !os.IsNotExist(err) {
			return api.Errorf(codes.Internal, "shard %s: delete: %v", shardID, err)
		}
	}
	if err := syncDirs(filepath.Dir(path), filepath.Dir(path)); err != nil {
		return api.Errorf(codes.Internal, "shard %s: sync directory: %v", shardID, err)
	}
	if existed {
		h.onDisk.Add(-1)
		h.m.onDisk.Set(float64(h.onDisk.Load()))
	}
	// Its alarms and messages went with it: they never fire or deliver
	// here.
	if err := h.alarms.remove(shardID); err != nil {
		h.log.Warn("drop the shard's alarm index entry", "shard", shardID, "err", err)
	}
	h.alarms.forgetShard(shardID)
	return nil
}

// Receive stores a shard's file streamed by its holder as shardID's
// incoming copy: written, synced, checked against size and sum, journaled.
// It is not served until Install. A mismatch is DATA_LOSS and leaves
// nothing behind.
func (h *Host) Receive(ctx context.Context, shardID string, r io.Reader, size int64, sum []byte) error {
	if err := h.refuseClosed(); err != nil {
		return err
	}
	h.mu.Lock()
	a := h.actors[shardID]
	_, recovered := h.recovered[shardID]
	_, frozen := h.frozen[shardID]
	h.mu.Unlock()
	if frozen || hasFile(h.journalPath(shardID, MoveSend)) {
		// This node is sending the shard away, or a send of it is still
		// journaled: a copy received now would be replaced, or deleted,
		// by that send's outcome.
		return api.Errorf(codes.FailedPrecondition, "shard %s is frozen on node %s for its own handoff; it cannot receive it", shardID, h.cfg.NodeID)
	}
	if recovered {
		// Resolving the old entry must not delete a new copy.
		return api.Wrap(ErrShardMoving, "shard "+shardID+": a handoff interrupted by a restart is being resolved")
	}
	if a != nil {
		return api.Errorf(codes.FailedPrecondition, "shard %s is active on node %s; it cannot receive it", shardID, h.cfg.NodeID)
	}
	h.mu.Lock()
	h.receiving++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.receiving--
		h.mu.Unlock()
	}()
	path := h.shardPath(shardID)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return api.Errorf(codes.Internal, "shard %s: %v", shardID, err)
	}
	if err := h.writeJournal(shardID, MoveRecv); err != nil {
		return api.Errorf(codes.Internal, "shard %s: journal the handoff: %v", shardID, err)
	}
	tmp := path + ".incoming.tmp"
	err := writeSynced(tmp, r, size, sum)
	renamed := false
	if err == nil {
		err = os.Rename(tmp, path+".incoming")
		renamed = err == nil
	}
	if err == nil {
		err = syncDirs(filepath.Dir(path), filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		if renamed {
			// Not acknowledged, so never committed: an activation must
			// not find it and install it later.
			os.Remove(path + ".incoming")
		}
		h.clearJournal(shardID, MoveRecv)
		if _, ok := err.(*api.Error); ok {
			return err
		}
		return api.Errorf(codes.Internal, "shard %s: store the incoming copy: %v", shardID, err)
	}
	return nil
}

func writeSynced(path string, r io.Reader, size int64, want []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var sum hash.Hash = sha256.New()
	n, err := io.Copy(io.MultiWriter(f, sum), r)
	if err != nil {
		return err
	}
	if n != size {
		return api.Errorf(codes.DataLoss, "handoff stream carried %d bytes, its header said %d", n, size)
	}
	if got := sum.Sum(nil); string(got) != string(want) {
		return api.Errorf(codes.DataLoss, "handoff stream's SHA-256 %x does not match the sender's %x", got, want)
	}
	return f.Sync()
}

// Install serves the incoming copy of shardID: the move committed. Any
// stale copy of the shard on this node is replaced. Installing a shard
// that is already installed is a no-op.
func (h *Host) Install(shardID string) error {
	if err := h.refuseClosed(); err != nil {
		return err
	}
	h.mu.Lock()
	_, frozen := h.frozen[shardID]
	h.mu.Unlock()
	if frozen {
		return api.Errorf(codes.FailedPrecondition, "shard %s is frozen on node %s for its own handoff; it cannot be installed", shardID, h.cfg.NodeID)
	}
	// One install at a time: an activation that finds the incoming copy
	// installs it too, and two renames — or one that deletes the -wal of
	// a database the other has just opened — must not interleave.
	h.installMu.Lock()
	defer h.installMu.Unlock()
	path := h.shardPath(shardID)
	if _, err := os.Stat(path + ".incoming"); os.IsNotExist(err) {
		h.mu.Lock()
		_, moved := h.moved[shardID]
		h.mu.Unlock()
		if _, err := os.Stat(path); err == nil && !moved {
			// Installed already (a crash may have come before the
			// journal entry was cleared).
			return h.clearJournal(shardID, MoveRecv)
		}
		return api.Errorf(codes.NotFound, "shard %s: no incoming copy on node %s", shardID, h.cfg.NodeID)
	}
	h.mu.Lock()
	if a := h.actors[shardID]; a != nil {
		h.mu.Unlock()
		return api.Errorf(codes.FailedPrecondition, "shard %s is active on node %s; it cannot be replaced", shardID, h.cfg.NodeID)
	}
	h.mu.Unlock()
	return h.installIncomingLocked(shardID)
}

// installIncoming installs the incoming copy for an activation or a
// freeze (the caller holds the shard: no actor has its file open). A copy
// a concurrent Install put in place meanwhile is not installed twice.
func (h *Host) installIncoming(shardID string) error {
	h.installMu.Lock()
	defer h.installMu.Unlock()
	if !hasFile(h.shardPath(shardID) + ".incoming") {
		return nil
	}
	return h.installIncomingLocked(shardID)
}

// installIncomingLocked renames the incoming copy into place; the caller
// holds installMu and made sure no actor has the shard's file open.
func (h *Host) installIncomingLocked(shardID string) error {
	h.forgetClean(shardID)
	path := h.shardPath(shardID)
	existed := hasFile(path)
	// Index the copy's alarms before it is served here, so that no crash
	// after the rename leaves them unindexed; an entry for a rename that
	// then fails is only early.
	if err := h.indexIncoming(shardID, path+".incoming"); err != nil {
		return api.Errorf(codes.Internal, "shard %s: index its alarms: %v", shardID, err)
	}
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return api.Errorf(codes.Internal, "shard %s: %v", shardID, err)
		}
	}
	if err := os.Rename(path+".incoming", path); err != nil {
		return api.Errorf(codes.Internal, "shard %s: install: %v", shardID, err)
	}
	if err := syncDirs(filepath.Dir(path), filepath.Join(h.cfg.Dir, "shards")); err != nil {
		return api.Errorf(codes.Internal, "shard %s: sync directory: %v", shardID, err)
	}
	if !existed {
		h.onDisk.Add(1)
		h.m.onDisk.Set(float64(h.onDisk.Load()))
	}
	h.mu.Lock()
	delete(h.moved, shardID)
	h.mu.Unlock()
	return h.clearJournal(shardID, MoveRecv)
}

// ResolveMove settles a journal entry left by a crash, given the holder
// the registry names (read through the log): the holder keeps or installs
// its copy; any other node deletes its own.
func (h *Host) ResolveMove(shardID string, role MoveRole, holder string) error {
	if err := h.refuseClosed(); err != nil {
		return err
	}
	self := holder == h.cfg.NodeID
	if role == MoveSend && holder == "" {
		self = true // not in the registry: nothing moved, keep the file
	}
	switch {
	case role == MoveRecv && self:
		return h.Install(shardID)
	case role == MoveRecv:
		h.installMu.Lock()
		os.Remove(h.shardPath(shardID) + ".incoming")
		h.installMu.Unlock()
		return h.clearJournal(shardID, MoveRecv)
	case self:
		return h.clearJournal(shardID, MoveSend)
	default:
		if err := h.removeShardFiles(shardID); err != nil {
			return err
		}
		h.mu.Lock()
		h.moved[shardID] = holder
		h.mu.Unlock()
		return h.clearJournal(shardID, MoveSend)
	}
}

// waitNotFrozen blocks while shardID is frozen for a handoff, bounded by
// ctx and MoveWait; it reports the holder if the shard moved away.
func (h *Host) waitNotFrozen(ctx context.Context, shardID string) error {
	var timer <-chan time.Time
	for {
		h.mu.Lock()
		ch, frozen := h.frozen[shardID]
		holder, moved := h.moved[shardID]
		role, pend := h.recovered[shardID]
		h.mu.Unlock()
		switch {
		case moved && !hasFile(h.shardPath(shardID)+".incoming"):
			// (With an incoming copy the shard may have come back: the
			// registry, read at activation, decides.)
			return Elsewhere(shardID, holder)
		case !frozen && pend && role == MoveSend:
			return api.Wrap(ErrShardMoving, "shard "+shardID+": a handoff interrupted by a restart is being resolved")
		case !frozen:
			return nil
		}
		if timer == nil {
			t := time.NewTimer(h.cfg.MoveWait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ch:
		case <-timer:
			return api.Wrap(ErrShardMoving, "shard "+shardID)
		case <-ctx.Done():
			return api.Wrap(ErrShardMoving, "shard "+shardID+": "+ctx.Err().Error())
		}
	}
}
