package cron

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the replicated tick state of the crons (the global tier's
// __lunora_crons; *raftglobal.Store implements it). Ticks are scheduled
// times in Unix milliseconds. Every method is leader-only and safe for
// concurrent use.
type Store interface {
	// CronTick reads a cron's state linearizably: the newest tick claimed
	// and the newest done (every tick at or before it is finished);
	// found is false for a cron never started.
	CronTick(ctx context.Context, name string) (claimedMs, doneMs int64, found bool, err error)
	// StartCron records a new cron: its ticks after fromMs are to run.
	// A cron already recorded is left as it is.
	StartCron(ctx context.Context, name string, fromMs int64) error
	// ClaimCronTick commits that this node runs tick tickMs; claimed is
	// false when the tick is done or a newer one is claimed.
	ClaimCronTick(ctx context.Context, name string, tickMs int64) (claimed bool, err error)
	// FinishCronTick records a run's end: done with an empty failure, a
	// failed call otherwise (the tick stays claimed).
	FinishCronTick(ctx context.Context, name string, tickMs int64, failure string) error
}

// Caller calls a function on a shard or the global tier, wherever its
// holder is (*node.Node implements it).
type Caller interface {
	Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error)
}

// Leadership is this node's view of the global tier's leadership
// (*raftglobal.Store implements it).
type Leadership interface {
	IsLeader() bool
	// LeaderChanged returns a channel closed at the next change of leader.
	LeaderChanged() <-chan struct{}
}

// Config configures a Runner.
type Config struct {
	// App holds the crons and the functions they call.
	App    *schema.App
	Store  Store
	Caller Caller
	// Clock is RealClock when nil.
	Clock Clock
	// RetryMin and RetryMax bound the back-off between the attempts of a
	// failed tick (doubling from RetryMin); a tick is retried until its
	// next tick is due, which supersedes it.
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds one call of a cron's function.
	CallTimeout time.Duration
	// LeaderPoll is how often Run checks the leadership besides when it
	// is told of a change.
	LeaderPoll time.Duration
	// Logger is discarded when nil; Registerer receives
	// lunora_cron_runs_total when set.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultConfig returns the production timings; App, Store and Caller
// are the caller's to set.
func DefaultConfig() Config {
	return Config{RetryMin: time.Second, RetryMax: time.Minute, CallTimeout: 30 * time.Second, LeaderPoll: 250 * time.Millisecond}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.App == nil || c.Store == nil || c.Caller == nil:
		return errors.New("cron: App, Store and Caller are required")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return errors.New("cron: RetryMin must be positive and RetryMax at least RetryMin")
	case c.CallTimeout <= 0 || c.LeaderPoll <= 0:
		return errors.New("cron: CallTimeout and LeaderPoll must be positive")
	}
	return nil
}

// Outcomes counted by lunora_cron_runs_total: a call that succeeded, a
// call that failed, and a tick given up because the next one was due.
const (
	OutcomeOK         = "ok"
	OutcomeError      = "error"
	OutcomeSuperseded = "superseded"
)

// Runner runs the crons while this node leads the global tier.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	runs    *prometheus.CounterVec
	leading atomic.Bool
}

// New returns a Runner; Run starts it.
func New(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, log: cfg.Logger, clock: cfg.Clock}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "cron")
	if r.clock == nil {
		r.clock = RealClock{}
	}
	r.runs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lunora_cron_runs_total",
		Help: "Calls of cron functions by outcome (ok, error), and ticks given up for the next (superseded).",
	}, []string{"cron", "outcome"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(r.runs); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("cron: register metrics: %w", err)
			}
			r.runs = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return r, nil
}

// Leading reports whether the runner is running the crons now.
func (r *Runner) Leading() bool { return r.leading.Load() }

// Run runs the crons whenever this node is the leader, until ctx ends:
// it starts Lead when the node becomes the leader and ends it, waiting
// for it, when the node stops being the leader.
func (r *Runner) Run(ctx context.Context, l Leadership) {
	poll := time.NewTicker(r.cfg.LeaderPoll)
	defer poll.Stop()
	for ctx.Err() == nil {
		changed := l.LeaderChanged()
		if l.IsLeader() {
			lctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				r.Lead(lctx)
			}()
			for l.IsLeader() && ctx.Err() == nil {
				select {
				case <-changed:
					changed = l.LeaderChanged()
				case <-poll.C:
				case <-ctx.Done():
				}
			}
			cancel()
			<-done
			continue
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-ctx.Done():
		}
	}
}

// Lead runs every cron until ctx ends; the caller ends ctx when this node
// stops leading. A call in flight when ctx ends is let finish (within
// CallTimeout) and its end recorded if the node still can.
func (r *Runner) Lead(ctx context.Context) {
	if len(r.cfg.App.Crons) == 0 {
		return
	}
	r.leading.Store(true)
	defer r.leading.Store(false)
	r.log.Info("this node leads the global tier: running the crons", "crons", len(r.cfg.App.Crons))
	var wg sync.WaitGroup
	for _, c := range r.cfg.App.Crons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runCron(ctx, c)
		}()
	}
	wg.Wait()
	r.log.Info("stopped running the crons")
}

// runCron runs one cron's ticks. last is the newest tick handled: done by
// an earlier leader, or run (or given up) by this one.
func (r *Runner) runCron(ctx context.Context, c *schema.Cron) {
	claimed, last, ok := r.state(ctx, c)
	if !ok {
		return
	}
	for {
		now := r.clock.Now()
		tick := c.Schedule.Latest(time.UnixMilli(last), now)
		// A tick claimed but not done (its leader stopped, or it was
		// failing) runs again, unless a newer tick is due.
		if claimed > last && (tick.IsZero() || claimed >= tick.UnixMilli()) {
			tick = time.UnixMilli(claimed)
		}
		if !tick.IsZero() {
			r.runTick(ctx, c, tick)
			last = tick.UnixMilli()
			if ctx.Err() != nil {
				return
			}
			continue
		}
		from := now
		if l := time.UnixMilli(last); l.After(from) {
			from = l
		}
		next := c.Schedule.Next(from)
		if next.IsZero() || !r.sleep(ctx, next.Sub(now)) {
			return
		}
	}
}

// state reads the cron's tick state, starting the cron if it is new
// (its first tick is the first after now), retrying until ctx ends.
func (r *Runner) state(ctx context.Context, c *schema.Cron) (claimed, done int64, ok bool) {
	for attempt := 0; ; attempt++ {
		claimed, done, found, err := r.cfg.Store.CronTick(ctx, c.Name)
		if err == nil && found {
			return claimed, done, true
		}
		if err == nil {
			if err = r.cfg.Store.StartCron(ctx, c.Name, r.clock.Now().UnixMilli()); err == nil {
				continue
			}
		}
		if ctx.Err() != nil {
			return 0, 0, false
		}
		r.log.Warn("cannot read the cron's state; retrying", "cron", c.Name, "err", err)
		if !r.sleep(ctx, r.backoff(attempt)) {
			return 0, 0, false
		}
	}
}

// runTick claims the tick, calls the function until a call succeeds or
// the next tick is due, and records the end.
func (r *Runner) runTick(ctx context.Context, c *schema.Cron, tick time.Time) {
	tickMs := tick.UnixMilli()
	log := r.log.With("cron", c.Name, "tick", tick.UTC().Format(time.RFC3339Nano))
	for attempt := 0; ; attempt++ {
		claimed, err := r.cfg.Store.ClaimCronTick(ctx, c.Name, tickMs)
		if err == nil && !claimed {
			log.Info("tick already done or superseded")
			return
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		wait := r.backoff(attempt)
		if r.superseded(c, tick, wait) {
			log.Warn("could not claim the tick before the next was due; giving it up", "err", err)
			r.runs.WithLabelValues(c.Name, OutcomeSuperseded).Inc()
			return
		}
		log.Warn("cannot claim the tick; retrying", "err", err, "in", wait)
		if !r.sleep(ctx, wait) {
			return
		}
	}
	args := make(map[string]any, len(c.Args)+1)
	for k, v := range c.Args {
		args[k] = v
	}
	if c.TickArg != "" {
		args[c.TickArg] = tickMs
	}
	shard := c.ShardID(r.cfg.App)
	for attempt := 0; ; attempt++ {
		// The call outlives ctx (a leadership lost meanwhile): a call cut
		// short could be done with its end unknown, and run again.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.CallTimeout)
		_, err := r.cfg.Caller.Call(cctx, shard, c.Function, args, api.ReadOptions{})
		cancel()
		if err == nil {
			r.runs.WithLabelValues(c.Name, OutcomeOK).Inc()
			log.Debug("ran", "attempt", attempt+1)
			r.finish(ctx, log, c, tickMs, "")
			return
		}
		r.runs.WithLabelValues(c.Name, OutcomeError).Inc()
		r.finish(ctx, log, c, tickMs, err.Error())
		if ctx.Err() != nil {
			return
		}
		wait := r.backoff(attempt)
		if r.superseded(c, tick, wait) {
			log.Error("cron call failed; the next tick is due before a retry, giving this one up", "err", err, "attempts", attempt+1)
			r.runs.WithLabelValues(c.Name, OutcomeSuperseded).Inc()
			return
		}
		log.Warn("cron call failed; retrying", "err", err, "attempt", attempt+1, "in", wait)
		if !r.sleep(ctx, wait) {
			return
		}
	}
}

// finish records a run's end through the log, briefly retried; a
// leadership lost meanwhile leaves the tick claimed, and the next leader
// runs it again.
func (r *Runner) finish(ctx context.Context, log *slog.Logger, c *schema.Cron, tickMs int64, failure string) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.CallTimeout)
	defer cancel()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = r.cfg.Store.FinishCronTick(fctx, c.Name, tickMs, failure); err == nil {
			return
		}
		if ctx.Err() != nil || !r.sleep(fctx, r.backoff(attempt)) {
			break
		}
	}
	log.Warn("could not record the end of the tick; a new leader will run it again", "err", err)
}

// superseded reports whether the tick after tick is due by the time a
// wait of d would end.
func (r *Runner) superseded(c *schema.Cron, tick time.Time, d time.Duration) bool {
	next := c.Schedule.Next(tick)
	return !next.IsZero() && !r.clock.Now().Add(d).Before(next)
}

func (r *Runner) backoff(attempt int) time.Duration {
	d := r.cfg.RetryMin
	for i := 0; i < attempt && d < r.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, r.cfg.RetryMax)
}

// sleep waits d on the clock; false when ctx ended first.
func (r *Runner) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-r.clock.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}
