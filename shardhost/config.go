package shardhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/sqlitex"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	mailboxRetryAfter      = 50 * time.Millisecond
	overloadRetryAfter     = 100 * time.Millisecond
	subscriptionRetryAfter = time.Second
)

// Config configures a Host.
type Config struct {
	// Dir is the node's data directory; shard files live under Dir/shards.
	Dir string
	// App is the validated lunora.yaml.
	App *schema.App
	// NodeID names the node in Status and logs.
	NodeID string
	// Synchronous is SQLite's synchronous level for shard writes: FULL (the
	// default: an acked write survives power loss) or NORMAL (survives a
	// process crash, not a power loss).
	Synchronous string
	// Durability is how FULL writes are made durable: "node" (the
	// default: shards commit with synchronous=NORMAL and one node-wide
	// syncer fdatasyncs every shard's write-ahead log per round before
	// anything is acknowledged or read; syncer.go) or "shard" (each
	// shard's COMMIT syncs its own log); empty means "node". Ignored with
	// Synchronous NORMAL.
	Durability string
	// IdleTimeout is how long a shard stays open without requests before it
	// hibernates (all handles closed).
	IdleTimeout time.Duration
	// ShedAfter is how long an active shard goes without requests before
	// it gives back what it can rebuild cheaply: its idle read
	// connections, its writer's prepared statements and page cache. Zero
	// never sheds.
	ShedAfter time.Duration
	// MaxActive caps open shards; past it the least recently used idle shard
	// hibernates.
	MaxActive int
	// MailboxSize bounds the mutations queued per shard.
	MailboxSize int
	// MaxBatch bounds the mutations one group commit takes.
	MaxBatch int
	// MaxInFlight bounds the requests a node serves at once.
	MaxInFlight int
	// ReadConns bounds the read-only connections per active shard.
	ReadConns int
	// CacheKiB is SQLite's page cache per connection.
	CacheKiB int
	// StatementTimeout bounds one function or statement.
	StatementTimeout time.Duration
	// MaxResultRows and MaxResultBytes bound a result; its bytes are
	// counted as the JSON API encodes them (escapes, base64), the largest
	// of its encodings.
	MaxResultRows  int
	MaxResultBytes int
	// MaxSQLLen bounds an admin SQL statement in bytes, and a function
	// statement of the App (checked by Validate).
	MaxSQLLen int
	// MaxParams bounds the named parameters of an admin statement, the
	// arguments a function declares, and a statement's parameters on
	// every shard connection (SQLITE_LIMIT_VARIABLE_NUMBER).
	MaxParams int
	// MaxValueBytes is the largest string or blob one statement may build
	// or bind (SQLITE_LIMIT_LENGTH): it caps what zeroblob, randomblob,
	// printf, || and group_concat can make a statement allocate.
	MaxValueBytes int
	// MaxStatements bounds the statements of one function of the App
	// (checked by Validate).
	MaxStatements int
	// ResultBudget bounds the bytes of results the node collects and holds
	// at once, over all shards (each counted at its encoded size, see
	// MaxResultBytes); past it a call answers RESOURCE_EXHAUSTED with a
	// retry hint. Zero means no node-wide bound.
	ResultBudget int64

	// MaxSubscriptions bounds the live subscriptions a node holds; over it
	// Subscribe answers RESOURCE_EXHAUSTED with a retry hint.
	MaxSubscriptions int
	// SubscriptionBuffer bounds the updates queued for one subscriber. One
	// that falls this far behind is cut off with RESOURCE_EXHAUSTED; the
	// shard never waits for it. Only a lagging subscriber holds that many
	// (about 112 bytes each plus the rows they share).
	SubscriptionBuffer int
	// SubscriptionHistory bounds the deltas a live query keeps so that a
	// reconnecting subscriber can resume from its last sequence number;
	// SubscriptionHistoryRows bounds the row changes they hold in total.
	SubscriptionHistory     int
	SubscriptionHistoryRows int
	// SubscriptionGrace is how long a live query's state outlives its last
	// subscriber, so that a quick reconnect resumes without a snapshot. The
	// shard hibernating (IdleTimeout after its last request or
	// subscription) drops the state sooner.
	SubscriptionGrace time.Duration

	// Logger receives the host's logs; discarded when nil.
	Logger *slog.Logger
	// Registerer receives the host's metrics; none are registered when nil.
	Registerer prometheus.Registerer
	// Now is the clock behind lunora_now(); time.Now when nil.
	Now func() time.Time
	// Registry is the cluster's shard registry (invariant I4: never create
	// what exists). A shard whose file is not on this node is created only
	// if the registry does not hold it, and is registered once, when
	// created. Nil skips the check (a node without a global tier).
	Registry Registry
	// MoveWait bounds how long a request waits for a shard frozen for a
	// handoff before it is answered UNAVAILABLE (SHARD_MOVING).
	MoveWait time.Duration

	// AlarmMaxAttempts bounds the runs of one alarm: after that many
	// failures it moves to __lunora_dead_alarms.
	AlarmMaxAttempts int
	// AlarmBackoff is the delay after an alarm's first failure; it doubles
	// with each further failure, up to AlarmBackoffMax.
	AlarmBackoff    time.Duration
	AlarmBackoffMax time.Duration
	// DeferAlarms keeps the alarm scheduler from firing until StartAlarms
	// is called: set it when the Registry cannot answer until the host's
	// user has finished wiring (a node process builds the router after the
	// host). Otherwise New starts it.
	DeferAlarms bool
	// QueueConsumers is how many messages of each queue with a consumer
	// function this node runs at once (consume.go); 0 means 4.
	QueueConsumers int

	// crash holds the durability path's fault hooks (tests only).
	crash crashHooks

	// BeforeBatch, when set, is called by a shard's writer goroutine before
	// each group commit, with the shard ID. It is a fault hook for tests
	// (holding it fills the mailbox deterministically); it must not call the
	// Host.
	BeforeBatch func(shardID string)
}

// Registry is the shard registry as the shard host uses it. Its methods
// are called when a shard activates, never on the request path of an
// active shard; RegisterShard may block on the network.
type Registry interface {
	// ShardHolder reports, from this node's replica, whether the registry
	// holds shardID and which node holds its file.
	ShardHolder(ctx context.Context, shardID string) (holder string, exists bool, err error)
	// RegisterShard records shardID as held by this node
	// (create-if-absent) and reports whether it was already there and who
	// holds it.
	RegisterShard(ctx context.Context, shardID string) (existed bool, holder string, err error)
}

// DefaultConfig returns production defaults; Dir and App must still be set.
func DefaultConfig() Config {
	return Config{
		NodeID:           "node-0",
		Synchronous:      "FULL",
		Durability:       DurabilityNode,
		IdleTimeout:      2 * time.Minute,
		ShedAfter:        5 * time.Second,
		MaxActive:        10000,
		MailboxSize:      1024,
		MaxBatch:         512,
		MaxInFlight:      8192,
		ReadConns:        2,
		CacheKiB:         1024,
		StatementTimeout: 5 * time.Second,
		MaxResultRows:    10000,
		MaxResultBytes:   8 << 20,
		MaxSQLLen:        schema.DefaultMaxSQLLen,
		MaxParams:        schema.DefaultMaxParams,
		MaxValueBytes:    schema.DefaultMaxValueBytes,
		MaxStatements:    schema.DefaultMaxStatements,
		ResultBudget:     256 << 20,

		MaxSubscriptions:        100000,
		SubscriptionBuffer:      256,
		SubscriptionHistory:     1024,
		SubscriptionHistoryRows: 8192,
		SubscriptionGrace:       30 * time.Second,

		MoveWait: 5 * time.Second,

		AlarmMaxAttempts: 5,
		AlarmBackoff:     time.Second,
		AlarmBackoffMax:  5 * time.Minute,

		QueueConsumers: 4,
	}
}

// DefaultLocalConfig returns defaults with short timers for tests.
func DefaultLocalConfig() Config {
	c := DefaultConfig()
	c.IdleTimeout = 200 * time.Millisecond
	c.MaxActive = 1000
	return c
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("shardhost: Dir is required")
	case c.App == nil:
		return errors.New("shardhost: App is required")
	case c.Synchronous != "FULL" && c.Synchronous != "NORMAL":
		return fmt.Errorf("shardhost: Synchronous must be FULL or NORMAL, not %q", c.Synchronous)
	case c.Durability != "" && c.Durability != DurabilityNode && c.Durability != DurabilityShard:
		return fmt.Errorf("shardhost: Durability must be %q or %q, not %q", DurabilityNode, DurabilityShard, c.Durability)
	case c.IdleTimeout <= 0:
		return errors.New("shardhost: IdleTimeout must be positive")
	case c.ShedAfter < 0:
		return errors.New("shardhost: ShedAfter must not be negative (0: never shed)")
	case c.MaxActive < 1:
		return errors.New("shardhost: MaxActive must be at least 1")
	case c.QueueConsumers < 0 || c.QueueConsumers > 1024:
		return errors.New("shardhost: QueueConsumers must be between 0 (the default, 4) and 1024")
	case c.AlarmMaxAttempts < 1 || c.AlarmBackoff <= 0 || c.AlarmBackoffMax < c.AlarmBackoff:
		return errors.New("shardhost: AlarmMaxAttempts must be at least 1, AlarmBackoff positive and AlarmBackoffMax at least AlarmBackoff")
	case c.MailboxSize < 1 || c.MaxBatch < 1 || c.MaxInFlight < 1 || c.ReadConns < 1:
		return errors.New("shardhost: MailboxSize, MaxBatch, MaxInFlight and ReadConns must be at least 1")
	case c.StatementTimeout <= 0:
		return errors.New("shardhost: StatementTimeout must be positive")
	case c.MaxResultRows < 1 || c.MaxResultBytes < 1 || c.MaxSQLLen < 1 || c.ResultBudget < 0:
		return errors.New("shardhost: result and SQL bounds must be positive")
	case c.MaxSubscriptions < 1 || c.SubscriptionBuffer < 1 || c.SubscriptionHistory < 1 || c.SubscriptionHistoryRows < 1:
		return errors.New("shardhost: MaxSubscriptions, SubscriptionBuffer, SubscriptionHistory and SubscriptionHistoryRows must be at least 1")
	case c.MaxParams < 1 || c.MaxValueBytes < 1 || c.MaxStatements < 1:
		return errors.New("shardhost: MaxParams, MaxValueBytes and MaxStatements must be at least 1")
	case c.MoveWait <= 0:
		return errors.New("shardhost: MoveWait must be positive")
	case c.SubscriptionGrace < 0:
		return errors.New("shardhost: SubscriptionGrace must not be negative")
	}
	return c.App.CheckLimits(c.schemaLimits())
}

// schemaLimits are the bounds every function of the App must keep to.
func (c *Config) schemaLimits() schema.Limits {
	return schema.Limits{MaxStatements: c.MaxStatements, MaxSQLLen: c.MaxSQLLen, MaxParams: c.MaxParams, MaxValueBytes: c.MaxValueBytes}
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (h *Host) connOptions(readOnly bool) sqlitex.Options {
	return sqlitex.Options{Synchronous: h.cfg.Synchronous, CacheKiB: h.cfg.CacheKiB, ReadOnly: readOnly,
		MaxSQLLen: h.cfg.MaxSQLLen, MaxParams: h.cfg.MaxParams, MaxValueBytes: h.cfg.MaxValueBytes,
		PersistWAL: true}
}

// nodeDurability reports whether the node's syncer makes shard writes
// durable (Config.Durability).
func (c *Config) nodeDurability() bool {
	return c.Synchronous == "FULL" && c.Durability == DurabilityNode
}

// writerOptions are the options of a shard's writer connection: in node
// mode it commits with synchronous=NORMAL and the syncer makes its commits
// durable.
func (h *Host) writerOptions() sqlitex.Options {
	o := h.connOptions(false)
	if h.sync != nil {
		o.Synchronous = "NORMAL"
	}
	return o
}

func (h *Host) limits() sqlitex.Limits {
	return sqlitex.Limits{MaxRows: h.cfg.MaxResultRows, MaxBytes: h.cfg.MaxResultBytes, Budget: h.budget}
}
