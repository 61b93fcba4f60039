package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/prometheus/client_golang/prometheus"
)

// Backend runs validated calls on shards and on the global tier:
// *node.Node in dev mode (one process), *rpc.NodeClient in front of a
// lunora-node.
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
}

// DefaultConfig returns a Config with 1 MiB bodies, a 10s request timeout
// and a discarding logger; App and Backend are left to the caller.
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
	}
	return nil
}
