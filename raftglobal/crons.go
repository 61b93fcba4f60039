package raftglobal

import (
	"context"
	"strings"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// cronSchema is the replicated tick state of lunora.yaml's crons (package
// cron runs them on the leader). Ticks are scheduled times in Unix
// milliseconds. done_tick_ms: every tick at or before it is finished (it
// ran, or a later tick superseded it); claimed_tick_ms: the newest tick a
// leader claimed, by claimed_by, claims times — claimed after done is a
// tick in flight or failing, which a new leader runs again. failures and
// last_error describe the failed calls since the last success.
const cronSchema = `CREATE TABLE IF NOT EXISTS __lunora_crons (name TEXT PRIMARY KEY,
	claimed_tick_ms INTEGER NOT NULL, claimed_by TEXT NOT NULL, claims INTEGER NOT NULL,
	done_tick_ms INTEGER NOT NULL, failures INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
	updated_ms INTEGER NOT NULL) WITHOUT ROWID`

// maxCronError bounds the failure text kept for a cron.
const maxCronError = 1000

// CronTick reads a cron's tick state with a linearizable read (leader
// only): the newest tick claimed and the newest done, in Unix
// milliseconds; found is false for a cron never started (StartCron).
func (s *Store) CronTick(ctx context.Context, name string) (claimedMs, doneMs int64, found bool, err error) {
	if err := s.ready(ctx, api.ReadOptions{Consistency: api.Strong}); err != nil {
		return 0, 0, false, err
	}
	res, err := s.systemRead(ctx, map[string]any{"name": name},
		`SELECT claimed_tick_ms, done_tick_ms FROM __lunora_crons WHERE name = :name`)
	if err != nil || len(res.Rows) == 0 {
		return 0, 0, false, err
	}
	claimedMs, _ = res.Rows[0][0].(int64)
	doneMs, _ = res.Rows[0][1].(int64)
	return claimedMs, doneMs, true, nil
}

// StartCron records a cron first seen (leader only): ticks after fromMs
// are its to run. A cron already recorded keeps its state.
func (s *Store) StartCron(ctx context.Context, name string, fromMs int64) error {
	if name == "" {
		return api.Errorf(codes.InvalidArgument, "a cron needs a name")
	}
	_, err := s.system(ctx, map[string]any{"name": name, "from": fromMs},
		`INSERT INTO __lunora_crons (name, claimed_tick_ms, claimed_by, claims, done_tick_ms, updated_ms)
		 VALUES (:name, :from, '', 0, :from, lunora_now()) ON CONFLICT (name) DO NOTHING`)
	return err
}

// ClaimCronTick commits that this node runs the cron's tick tickMs
// (leader only): it takes effect, and claimed is true, only while the
// tick is newer than the last done and not older than the last claimed —
// a tick claimed again (by a new leader, its run not known to be done)
// counts one more claim.
func (s *Store) ClaimCronTick(ctx context.Context, name string, tickMs int64) (claimed bool, err error) {
	if name == "" {
		return false, api.Errorf(codes.InvalidArgument, "a cron needs a name")
	}
	res, err := s.system(ctx, map[string]any{"name": name, "tick": tickMs, "by": s.cfg.NodeID},
		`INSERT INTO __lunora_crons (name, claimed_tick_ms, claimed_by, claims, done_tick_ms, updated_ms)
		 VALUES (:name, :tick, :by, 1, 0, lunora_now())
		 ON CONFLICT (name) DO UPDATE SET
		   claims = CASE WHEN claimed_tick_ms = excluded.claimed_tick_ms THEN claims + 1 ELSE 1 END,
		   claimed_tick_ms = excluded.claimed_tick_ms, claimed_by = excluded.claimed_by, updated_ms = excluded.updated_ms
		 WHERE excluded.claimed_tick_ms > done_tick_ms AND excluded.claimed_tick_ms >= claimed_tick_ms`,
		`SELECT changes()`)
	if err != nil {
		return false, err
	}
	return firstInt(res) == 1, nil
}

// FinishCronTick records the end of a run of the tick tickMs (leader
// only). An empty failure marks the tick, and every tick before it, done;
// otherwise the failure is counted and kept as the cron's last error, and
// the tick stays claimed.
func (s *Store) FinishCronTick(ctx context.Context, name string, tickMs int64, failure string) error {
	if failure == "" {
		_, err := s.system(ctx, map[string]any{"name": name, "tick": tickMs},
			`UPDATE __lunora_crons SET done_tick_ms = :tick, failures = 0, last_error = '', updated_ms = lunora_now()
			 WHERE name = :name AND done_tick_ms < :tick`)
		return err
	}
	if len(failure) > maxCronError {
		failure = strings.ToValidUTF8(failure[:maxCronError], "")
	}
	_, err := s.system(ctx, map[string]any{"name": name, "tick": tickMs, "failure": failure},
		`UPDATE __lunora_crons SET failures = failures + 1, last_error = :failure, updated_ms = lunora_now()
		 WHERE name = :name AND done_tick_ms < :tick`)
	return err
}

// LeaderChanged returns a channel closed at the next change of leader,
// this node's stepping down included.
func (s *Store) LeaderChanged() <-chan struct{} { return s.leaderChanged() }
