package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/prometheus/client_golang/prometheus"
)

// Backend runs validated calls on shards and on the global tier:
// *node.Node in dev mode (one process), *rpc.NodeClient in front of a
// lunora-node, *router.Router in front of a cluster.
//
// Methods are called concurrently, must honour ctx (return promptly with
// its error once it is done) and return *api.Error values with canonical
// codes; any other error reaches the client as a generic INTERNAL.
type Backend interface {
	// Call runs function on shardID with args already bound by
	// schema.Function.BindArgs.
	// read applies to reads of the global tier (shardID "__global__").
	Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error)
	// Exec runs one admin statement through the shard's writer (or on the
	// global tier).
	Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error)
	// Status reports on the process that runs the shards.
	Status(ctx context.Context) (*api.Status, error)
	// Subscribe starts a live query on a shard; args already bound.
	Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error)

	// Queues and the alarm listings (queues.go, consume.go; ARCHITECTURE.md
	// §8). An unknown queue is NOT_FOUND.

	// ReceiveMessages leases up to max ready messages of queue (never
	// more), waiting up to wait for one; each lease lasts visibility (0:
	// the queue's visibility timeout).
	ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error)
	// SettleMessages acks, nacks or extends messages (by ID) of one shard
	// and answers how many it changed.
	SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error)
	// DeadMessages lists dead-letter messages of queue ("": every queue),
	// oldest first, up to limit.
	DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error)
	// Redrive puts dead-letter messages of queue (ids empty: all of them)
	// back on the queue and answers how many.
	Redrive(ctx context.Context, queue string, ids []string) (int, error)
	// Alarms lists one shard's alarms: pending by due time, then dead.
	Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error)
	// AlarmsDue lists the alarm index (each shard's next alarm and its
	// node) by due time, up to limit.
	AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error)
}

// Config configures a Gateway. Start from DefaultConfig.
type Config struct {
	// App is the application schema calls are validated against. Required.
	App *schema.App
	// Backend runs the calls. Required.
	Backend Backend
	// Logger receives request failures the client only sees as INTERNAL.
	// Nil discards.
	Logger *slog.Logger
	// Registerer receives the gateway's metrics. Nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
	// MaxBodyBytes bounds an HTTP request body.
	MaxBodyBytes int64
	// RequestTimeout bounds each call to the Backend; a shorter deadline
	// of the caller wins.
	RequestTimeout time.Duration
	// MaxSubscriptionsPerConn bounds the live queries one WebSocket holds.
	MaxSubscriptionsPerConn int
	// MaxFrameBytes bounds a WebSocket frame from the client.
	MaxFrameBytes int64
	// PingInterval is how often the gateway pings an idle WebSocket.
	PingInterval time.Duration
	// MaxFanOutShards bounds the shards one fan-out reads (FanOut); 0
	// means DefaultMaxFanOutShards.
	MaxFanOutShards int
	// MaxFanOutRows bounds a fan-out's limit and the rows of a concat
	// fan-out without one; 0 means DefaultMaxFanOutRows.
	MaxFanOutRows int

	// Auth authenticates callers (auth.go). Required unless AuthOff.
	Auth Authenticator
	// AuthOff turns authentication off: every caller is DevIdentity, an
	// admin. Only for a gateway nobody but this machine reaches (dev mode
	// on loopback); the binaries refuse it on any other address.
	AuthOff bool
	// Blobs, when set, serves the blob endpoints (gateway/blob.go).
	Blobs *BlobConfig
	// RateLimit is the requests per second one client may send (HTTP
	// requests, gRPC calls, WebSocket subscribe frames), refilling a
	// bucket of RateBurst; over it a request is refused with
	// RESOURCE_EXHAUSTED (HTTP 429) and a Retry-After. A client is its
	// authenticated identity, else its address (see ClientKey). Zero: no
	// rate limit.
	RateLimit float64
	// RateBurst is the client's bucket size; zero means RateLimit rounded
	// up.
	RateBurst int
	// BodyBytesPerSecond is the bytes of HTTP request bodies one client
	// may send per second, refilling a bucket of this size (at least
	// MaxBodyBytes); a client that sent more is refused like one over
	// RateLimit until the bucket is positive again. Zero: no byte bound.
	BodyBytesPerSecond int64
	// MaxConcurrentPerClient bounds the requests one client has in flight
	// at once (RESOURCE_EXHAUSTED past it). Zero: no bound.
	MaxConcurrentPerClient int
	// MaxWebSocketsPerClient bounds the WebSockets and gRPC subscription
	// streams one client holds open at once. Zero: no bound.
	MaxWebSocketsPerClient int
	// CORSOrigins lists the origins (scheme://host[:port], or "*" alone)
	// whose web pages may call the API; requests from any other origin but
	// the gateway's own are refused (see edge.go). Empty: same origin only.
	CORSOrigins []string
	// SchemaLimits bound the app's functions (checked by New) and admin
	// SQL (its length and parameters, checked before it is forwarded);
	// give the nodes the same values. Zero fields take
	// schema.DefaultLimits' values.
	SchemaLimits schema.Limits
}

// Defaults of the per-client limits: lunora-gateway's flags. They stay
// off in DefaultConfig: an in-process gateway — dev mode, benchmarks —
// serves one local user.
const (
	DefaultRateLimit              = 1000
	DefaultRateBurst              = 2000
	DefaultBodyBytesPerSecond     = 32 << 20
	DefaultMaxConcurrentPerClient = 256
	DefaultMaxWebSocketsPerClient = 256
)

// DefaultConfig returns a Config with 1 MiB bodies, a 10s request timeout,
// no per-client limits, same-origin browser access only,
// schema.DefaultLimits and a discarding logger; App and Backend are left
// to the caller.
func DefaultConfig() Config {
	return Config{
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		MaxBodyBytes:   1 << 20,
		RequestTimeout: 10 * time.Second,

		MaxSubscriptionsPerConn: 100,
		MaxFrameBytes:           64 << 10,
		PingInterval:            30 * time.Second,

		MaxFanOutShards: DefaultMaxFanOutShards,
		MaxFanOutRows:   DefaultMaxFanOutRows,

		SchemaLimits: schema.DefaultLimits(),
	}
}

// Validate reports the first problem of c.
func (c Config) Validate() error {
	switch {
	case c.App == nil:
		return errors.New("gateway: Config.App is required")
	case c.Backend == nil:
		return errors.New("gateway: Config.Backend is required")
	case c.MaxBodyBytes <= 0:
		return errors.New("gateway: Config.MaxBodyBytes must be positive")
	case c.RequestTimeout <= 0:
		return errors.New("gateway: Config.RequestTimeout must be positive")
	case c.MaxSubscriptionsPerConn <= 0 || c.MaxFrameBytes <= 0 || c.PingInterval <= 0:
		return errors.New("gateway: MaxSubscriptionsPerConn, MaxFrameBytes and PingInterval must be positive")
	case c.MaxFanOutShards < 0 || c.MaxFanOutRows < 0:
		return errors.New("gateway: MaxFanOutShards and MaxFanOutRows must not be negative")
	case c.Auth == nil && !c.AuthOff:
		return errors.New("gateway: Config.Auth is required (or AuthOff, for a loopback-only dev gateway)")
	case c.Auth != nil && c.AuthOff:
		return errors.New("gateway: Config.Auth and AuthOff exclude each other")
	case c.Blobs != nil && c.Blobs.validate() != nil:
		return c.Blobs.validate()
	case c.RateLimit < 0 || math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) || c.RateBurst < 0 || c.BodyBytesPerSecond < 0:
		return errors.New("gateway: RateLimit, RateBurst and BodyBytesPerSecond must not be negative")
	case c.MaxConcurrentPerClient < 0 || c.MaxWebSocketsPerClient < 0:
		return errors.New("gateway: MaxConcurrentPerClient and MaxWebSocketsPerClient must not be negative")
	}
	if _, err := ParseOrigins(c.CORSOrigins); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return c.App.CheckLimits(c.schemaLimits())
}

// schemaLimits is SchemaLimits with zero fields defaulted.
func (c Config) schemaLimits() schema.Limits {
	l, def := c.SchemaLimits, schema.DefaultLimits()
	if l.MaxStatements == 0 {
		l.MaxStatements = def.MaxStatements
	}
	if l.MaxSQLLen == 0 {
		l.MaxSQLLen = def.MaxSQLLen
	}
	if l.MaxParams == 0 {
		l.MaxParams = def.MaxParams
	}
	if l.MaxValueBytes == 0 {
		l.MaxValueBytes = def.MaxValueBytes
	}
	return l
}
