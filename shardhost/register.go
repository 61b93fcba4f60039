package shardhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Registrations with an unknown outcome.
//
// A new shard's registration can fail without saying whether it committed
// (leadership lost in flight, a deadline after the Raft entry). Its file
// is kept (activate explains why), and the shard is remembered here —
// durably, under <Dir>/unregistered, so a restart does not forget it —
// until a later activation settles the outcome: the registry names this
// node (the file is the shard's, kept), names another node (the file was
// never served and goes), or names no one (the registration is retried;
// create-if-absent, so it cannot create the shard twice).
//
// A request to the shard settles it too, but none may ever come to this
// node (the router asks the registry first): the janitor retries every
// unsettled registration in the background, so no never-served copy is
// left behind for good.

// resolveEvery is how often the janitor retries unsettled registrations.
const resolveEvery = 2 * time.Second

func (h *Host) unregisteredDir() string { return filepath.Join(h.cfg.Dir, "unregistered") }

func (h *Host) unregisteredPath(shardID string) string {
	return filepath.Join(h.unregisteredDir(), filepath.Base(h.shardPath(shardID))+".reg")
}

// loadUnregistered reads the unsettled registrations an earlier run left.
func (h *Host) loadUnregistered() error {
	dir := h.unregisteredDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if filepath.Ext(p) != ".reg" {
			os.Remove(p) // a .tmp a crash left: its registration never began
			continue
		}
		id, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if len(id) == 0 {
			os.Remove(p)
			continue
		}
		h.unregistered[string(id)] = true
	}
	return nil
}

// noteUnregistered remembers that shardID's registration failed with an
// unknown outcome and its file was kept.
func (h *Host) noteUnregistered(shardID string) {
	if err := writeMarker(h.unregisteredDir(), h.unregisteredPath(shardID), shardID); err != nil {
		// In memory it is still retried; only a restart would forget it.
		h.log.Warn("record an unsettled shard registration", "shard", shardID, "err", err)
	}
	h.mu.Lock()
	h.unregistered[shardID] = true
	h.mu.Unlock()
}

func (h *Host) settled(shardID string) {
	if err := os.Remove(h.unregisteredPath(shardID)); err != nil && !os.IsNotExist(err) {
		h.log.Warn("clear a settled shard registration", "shard", shardID, "err", err)
	}
	h.mu.Lock()
	delete(h.unregistered, shardID)
	h.mu.Unlock()
}

// Unsettled returns the shards whose registration outcome is still
// unknown here.
func (h *Host) Unsettled() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.unregistered))
	for id := range h.unregistered {
		out = append(out, id)
	}
	return out
}

// registrationRefused reports whether a failed registration is known not
// to have committed: the registry applied it and said no (this node is
// in the newest ring epoch, the ID is invalid). Anything else — unavailable, a
// deadline, leadership lost — leaves the outcome unknown.
func registrationRefused(err error) bool {
	if r, _ := api.ReasonOf(err); r == api.ReasonNotOwner {
		// The registry applied the entry and created nothing: the node
		// is not in the newest ring epoch (raftglobal.ErrNotInRing).
		return true
	}
	switch api.CodeOf(err) {
	case codes.FailedPrecondition, codes.InvalidArgument, codes.PermissionDenied, codes.AlreadyExists, codes.NotFound, codes.OutOfRange:
		return true
	}
	return false
}

// SettleRegistrations activates each unsettled shard once; activation
// settles the registration (see above) and clears the entry. A shard
// whose outcome is still unknown (the registry unreachable) stays for
// the next round. The janitor runs it off its loop; a leaving node after
// its last handoff pass, so no never-served copy stays behind. h.stop
// ends it.
func (h *Host) SettleRegistrations() {
	for _, id := range h.Unsettled() {
		select {
		case <-h.stop:
			return
		default:
		}
		group, key, err := h.cfg.App.ParseShardID(id)
		if err != nil {
			h.settled(id) // not a shard of this app (any more): nothing to serve
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		a, err := h.acquire(ctx, id, group, key)
		cancel()
		if err == nil {
			h.release(a)
			h.settled(id) // registered, or registered before the restart
			continue
		}
		if errors.Is(err, ErrClosed) {
			return
		}
		h.log.Debug("shard registration", "shard", id, "err", err, "settled", !h.isUnsettled(id))
	}
}

// SettleAll settles every registration in doubt — after the creations
// under way are done (call StopCreating first) — retrying (backing off
// to a second) until none is left or ctx ends; it says which are left.
// A leaving node's last step, once its leave's epoch is committed: from
// then on no registration of its can commit, so each answer is final and
// no never-served copy stays behind on a node that is gone.
func (h *Host) SettleAll(ctx context.Context) error {
	// First the creations under way when StopCreating was called: their
	// registrations may end in doubt too.
	created := make(chan struct{})
	go func() {
		h.createMu.Lock()
		h.createMu.Unlock()
		close(created)
	}()
	select {
	case <-created:
	case <-ctx.Done():
		return fmt.Errorf("shards being created here when the node began to leave: %w", ctx.Err())
	}
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		h.SettleRegistrations()
		left := h.Unsettled()
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("shard registrations still in doubt here (their files are kept): %v: %w", left, ctx.Err())
		case <-h.stop:
			return fmt.Errorf("shard registrations still in doubt here (their files are kept): %v: %w", left, ErrClosed)
		case <-time.After(backoff):
		}
	}
}

// StopCreating makes this host refuse to create any shard from now on
// (UNAVAILABLE, reason NOT_OWNER: the caller asks the ring again). A
// leaving node calls it first: a shard it created now could never be
// registered, and its file would only be left behind.
func (h *Host) StopCreating() { h.noCreate.Store(true) }

func (h *Host) isUnsettled(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unregistered[id]
}
