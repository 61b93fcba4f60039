package shardhost

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/sqlitex"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// Host runs the shard actors of one node. It is safe for concurrent use.
type Host struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	start  time.Time
	budget *sqlitex.Budget // results in flight (Config.ResultBudget); nil: none

	mu      sync.Mutex
	actors  map[string]*actor        // active or activating
	closing map[string]chan struct{} // shards whose handles are being closed
	lru     *list.List               // activated actors, most recently used first
	closed  bool
	// Handoffs (handoff.go): shards frozen for a move (closed when the
	// move ends), shards that moved away (their new holder), journaled
	// moves an earlier run left, until resolved, and streams being
	// received.
	frozen    map[string]chan struct{}
	moved     map[string]string
	recovered map[string]MoveRole
	receiving int
	// installMu serializes installs of received copies (handoff.go).
	installMu sync.Mutex
	// Shards whose registration outcome is unknown (register.go).
	unregistered map[string]bool
	settling     atomic.Bool
	noCreate     atomic.Bool  // StopCreating (register.go)
	createMu     sync.RWMutex // read-held by an activation creating a shard

	inFlight        atomic.Int64
	onDisk          atomic.Int64
	closedSinceTrim atomic.Int64

	// Shards this process closed cleanly, with what their files looked
	// like then (hibernate.go, closedCleanly).
	cleanMu sync.Mutex
	clean   map[string]fileStamp

	// sync is the node's durability round loop; nil unless
	// Config.Durability is "node" (syncer.go).
	sync *syncer

	// alarms is the node's index of due alarms (alarms.go).
	alarms *alarmIndex

	alarmsOnce sync.Once

	stop     chan struct{}
	life     context.Context // canceled by Shutdown, with stop
	endLife  context.CancelFunc
	janitor  sync.WaitGroup
	shutOnce sync.Once
}

// New opens a Host over cfg.Dir, counting the shard files already there.
func New(cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Durability == "" {
		cfg.Durability = DurabilityNode
	}
	log := cfg.logger()
	if fit, limit := clampMaxActive(cfg.MaxActive, cfg.ReadConns); fit < cfg.MaxActive {
		log.Warn("lowering MaxActive to fit the open-file limit; raise the limit (ulimit -n) to keep more shards open",
			"configured", cfg.MaxActive, "max_active", fit, "nofile", limit)
		cfg.MaxActive = fit
	}
	h := &Host{
		cfg:       cfg,
		log:       log,
		m:         newMetrics(cfg.Registerer),
		start:     time.Now(),
		actors:    map[string]*actor{},
		closing:   map[string]chan struct{}{},
		lru:       list.New(),
		stop:      make(chan struct{}),
		frozen:    map[string]chan struct{}{},
		moved:     map[string]string{},
		recovered: map[string]MoveRole{},

		unregistered: map[string]bool{},
		clean:        map[string]fileStamp{},
	}
	h.life, h.endLife = context.WithCancel(context.Background())
	if cfg.ResultBudget > 0 {
		h.budget = sqlitex.NewBudget(cfg.ResultBudget)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lunora_result_budget_bytes_in_use", Help: "Bytes of results (as encoded) the node holds now, out of -result-budget.",
		}, func() float64 { return float64(h.budget.InUse()) }))
	}
	if err := h.loadJournal(); err != nil {
		return nil, fmt.Errorf("shardhost: read the handoff journal: %w", err)
	}
	if err := h.loadUnregistered(); err != nil {
		return nil, fmt.Errorf("shardhost: read the unsettled registrations: %w", err)
	}
	root := filepath.Join(cfg.Dir, "shards")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("shardhost: %w", err)
	}
	n, err := countShardFiles(root)
	if err != nil {
		return nil, fmt.Errorf("shardhost: count shards in %s: %w", root, err)
	}
	h.onDisk.Store(n)
	h.m.onDisk.Set(float64(n))
	if h.alarms, err = h.openAlarmIndex(); err != nil {
		return nil, fmt.Errorf("shardhost: open the alarm index %s (a hint: deleted, it is rebuilt from the shard files at the next start): %w", filepath.Join(cfg.Dir, "alarms.db"), err)
	}
	if cfg.Registerer != nil && len(cfg.App.Queues) > 0 {
		if err := cfg.Registerer.Register(newQueueCollector(h)); err != nil {
			h.alarms.close()
			return nil, fmt.Errorf("shardhost: register the queue metrics: %w", err)
		}
	}
	if cfg.nodeDurability() {
		h.sync = newSyncer(h)
	}
	h.janitor.Add(1)
	go h.runJanitor()
	if !cfg.DeferAlarms {
		h.StartAlarms()
	}
	return h, nil
}

func countShardFiles(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".db") {
			n++
		}
		return nil
	})
	return n, err
}

// shardPath maps a shard ID to its file. IDs are hashed so any key is a
// safe file name, and fanned out over two directory levels so that a
// million shards never crowd one directory.
func (h *Host) shardPath(shardID string) string {
	sum := sha256.Sum256([]byte(shardID))
	name := hex.EncodeToString(sum[:16])
	return filepath.Join(h.cfg.Dir, "shards", name[0:2], name[2:4], name+".db")
}

// Call runs a declared function on a shard. Arguments are validated here
// again (the gateway already did), so a node never trusts its caller's
// typing.
func (h *Host) Call(ctx context.Context, shardID, function string, args map[string]any) (res *api.Result, err error) {
	start := time.Now()
	label := "unknown"
	defer func() { h.observe(label, start, err) }()
	fn := h.cfg.App.Function(function)
	if fn == nil {
		return nil, api.Wrap(ErrUnknownFunction, fmt.Sprintf("%q is not declared in lunora.yaml", function))
	}
	label = fn.Name
	shardID, group, key, bound, err := h.bindCall(fn, shardID, args)
	if err != nil {
		return nil, err
	}
	named := namedArgs(bound)
	var held int64
	defer func() { h.budget.Release(held) }()
	err = h.withShard(ctx, shardID, group, key, func(a *actor) error {
		if fn.Kind == schema.Query {
			res, err = a.query(ctx, fn.SQL, named, &held)
		} else {
			res, err = a.mutate(ctx, fn.SQL, named, &held)
		}
		return err
	})
	return res, err
}

// bindCall checks that shardID is a shard of fn's group and binds args,
// refusing a key argument that names another shard. It returns the
// canonical shard ID, its group and typed key, and the bound arguments.
func (h *Host) bindCall(fn *schema.Function, shardID string, args map[string]any) (string, string, any, map[string]any, error) {
	group, key, err := h.cfg.App.ParseShardID(shardID)
	if err != nil {
		return "", "", nil, nil, err
	}
	if group == schema.GlobalGroup {
		return "", "", nil, nil, errGlobalNotShard
	}
	if group == schema.RootShard {
		shardID = schema.RootShard
	}
	if group != fn.ShardBy {
		return "", "", nil, nil, api.Errorf(codes.InvalidArgument, "function %s runs on %s shards, not on shard %q", fn.Name, fn.ShardBy, shardID)
	}
	bound, err := fn.BindArgs(args)
	if err != nil {
		return "", "", nil, nil, err
	}
	if v, ok := bound[group]; ok && key != nil && v != key {
		return "", "", nil, nil, api.Errorf(codes.InvalidArgument, "function %s: argument %s=%v does not match shard %q", fn.Name, group, v, shardID)
	}
	return shardID, group, key, bound, nil
}

// Exec runs one admin statement on a shard inside the same sandbox as
// function SQL: on a read connection when SQLite says it cannot write,
// through the shard's writer otherwise.
func (h *Host) Exec(ctx context.Context, shardID, sql string, params map[string]any) (res *api.Result, err error) {
	start := time.Now()
	defer func() { h.observe("sql", start, err) }()
	group, key, err := h.cfg.App.ParseShardID(shardID)
	if err != nil {
		return nil, err
	}
	if group == schema.GlobalGroup {
		return nil, errGlobalNotShard
	}
	if group == schema.RootShard {
		shardID = schema.RootShard
	}
	named, err := h.checkAdminSQL(sql, params)
	if err != nil {
		return nil, err
	}
	var held int64
	defer func() { h.budget.Release(held) }()
	err = h.withShard(ctx, shardID, group, key, func(a *actor) error {
		var read bool
		res, read, err = a.adminRead(ctx, sql, named, &held)
		if read || err != nil {
			return err
		}
		res, err = a.mutate(ctx, []string{sql}, named, &held)
		return err
	})
	return res, err
}

// ResultBytesInUse reports the bytes of the result budget held now.
func (h *Host) ResultBytesInUse() int64 { return h.budget.InUse() }

// Status reports the node's shard counts.
func (h *Host) Status(ctx context.Context) (*api.Status, error) {
	h.mu.Lock()
	active := int64(h.activeLocked())
	h.mu.Unlock()
	return &api.Status{
		NodeID:        h.cfg.NodeID,
		ActiveShards:  active,
		ShardsOnDisk:  h.onDisk.Load(),
		InFlight:      h.inFlight.Load(),
		UptimeSeconds: int64(time.Since(h.start).Seconds()),
	}, nil
}

func (h *Host) observe(function string, start time.Time, err error) {
	code := api.CodeOf(err).String()
	h.m.requests.WithLabelValues(function, code).Inc()
	h.m.latency.WithLabelValues(function, code).Observe(time.Since(start).Seconds())
}

// withShard bounds the node's in-flight requests, activates the shard and
// keeps it from hibernating while fn runs.
func (h *Host) withShard(ctx context.Context, shardID, group string, key any, fn func(*actor) error) error {
	if n := h.inFlight.Add(1); n > int64(h.cfg.MaxInFlight) {
		h.inFlight.Add(-1)
		return api.Wrap(ErrOverloaded, fmt.Sprintf("%d requests in flight", h.cfg.MaxInFlight))
	}
	h.m.inFlight.Inc()
	defer func() {
		h.inFlight.Add(-1)
		h.m.inFlight.Dec()
	}()
	a, err := h.acquire(ctx, shardID, group, key)
	if err != nil {
		return err
	}
	defer h.release(a)
	return fn(a)
}

// acquire returns the shard's actor, activating it if needed, with a
// reference held: an actor with references never hibernates.
func (h *Host) acquire(ctx context.Context, shardID, group string, key any) (*actor, error) {
	if err := h.waitNotFrozen(ctx, shardID); err != nil {
		return nil, err
	}
	h.mu.Lock()
	if _, frozen := h.frozen[shardID]; frozen {
		h.mu.Unlock()
		return h.acquire(ctx, shardID, group, key) // frozen since the check
	}
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	a := h.actors[shardID]
	if a != nil {
		a.refs++
		a.lastUsed = time.Now()
		if a.elem != nil {
			h.lru.MoveToFront(a.elem)
		}
		h.mu.Unlock()
		select {
		case <-a.ready:
		case <-ctx.Done():
			h.release(a)
			return nil, api.Errorf(api.CodeOf(ctx.Err()), "waiting for shard %s to activate: %v", shardID, ctx.Err())
		}
		if a.err != nil {
			h.release(a)
			return nil, a.err
		}
		return a, nil
	}
	a = newActor(h, shardID, group, key)
	a.refs = 1
	h.actors[shardID] = a
	wait := h.closing[shardID]
	h.mu.Unlock()

	if wait != nil {
		<-wait // the previous incarnation is still closing its handles
	}
	a.err = a.activate()
	h.mu.Lock()
	if a.err != nil {
		delete(h.actors, shardID)
	} else {
		a.elem = h.lru.PushFront(a)
		h.m.active.Set(float64(h.activeLocked()))
	}
	evict := h.overCapLocked()
	h.mu.Unlock()
	close(a.ready)
	h.closeActors(evict)
	if a.err != nil {
		h.release(a)
		return nil, a.err
	}
	return a, nil
}

func (h *Host) release(a *actor) {
	h.mu.Lock()
	a.refs--
	a.lastUsed = time.Now()
	h.mu.Unlock()
}

// Shutdown stops taking requests, waits (bounded by ctx) for those in
// flight, and closes every shard.
func (h *Host) Shutdown(ctx context.Context) error {
	var err error
	h.shutOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		close(h.stop)
		h.endLife()
		h.janitor.Wait()
		for h.inFlight.Load() > 0 {
			select {
			case <-ctx.Done():
				err = fmt.Errorf("shardhost: %d requests still in flight: %w", h.inFlight.Load(), ctx.Err())
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		h.mu.Lock()
		var all []*actor
		// (detachLocked unlinks the element: take the front each time.)
		for h.lru.Len() > 0 {
			all = append(all, h.detachLocked(h.lru.Front().Value.(*actor)))
		}
		h.mu.Unlock()
		h.closeActors(all)
		if h.sync != nil {
			h.sync.close()
		}
		if cerr := h.alarms.close(); cerr != nil && err == nil {
			err = fmt.Errorf("shardhost: close the alarm index: %w", cerr)
		}
	})
	return err
}
