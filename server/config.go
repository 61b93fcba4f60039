package server

import (
	"crypto/tls"
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc"
)

// Config bounds what a client can hold of a process: how long it may take
// to send a request, how long its answer may take to be read, how many
// connections it may keep open. A zero field takes its default (see
// DefaultConfig); a negative one turns that bound off.
type Config struct {
	// ReadHeaderTimeout bounds reading a request's headers (HTTP).
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds reading a request's whole body, from when its
	// headers are read (HTTP). A body not received in time fails the
	// handler's read and the connection is closed after the answer.
	// Requests without a body — a WebSocket upgrade at /v1/subscribe —
	// are not bounded by it: the socket lives as long as the client wants.
	BodyTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its answer, from
	// when its headers are read (HTTP), so that a client reading its answer
	// slowly does not hold the connection forever. WebSocket upgrades are
	// exempt. Keep it well above BodyTimeout, or a body that used most of
	// its time leaves none for the answer.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive HTTP connection idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (HTTP).
	MaxHeaderBytes int
	// GRPCHandshakeTimeout bounds a gRPC connection's setup (the HTTP/2
	// preface and settings); a client that connects and says nothing is
	// closed after it.
	GRPCHandshakeTimeout time.Duration
	// GRPCMaxConnectionIdle closes a gRPC connection without calls for
	// this long (with a GOAWAY: a client reconnects on its next call).
	GRPCMaxConnectionIdle time.Duration

	// MaxConnsPerIP bounds the connections one remote address holds open
	// at once, over all the process's listeners (HTTP and gRPC); past it a
	// new connection is closed as soon as it is accepted.
	MaxConnsPerIP int
	// MaxConns bounds the connections the process holds open at once over
	// all its listeners. Zero derives it from the open-file limit
	// (RLIMIT_NOFILE): half of it, so that shard files, the global tier
	// and outgoing connections keep the other half.
	MaxConns int

	// GRPCTLS, when set, makes the gRPC listener speak TLS with it (and
	// gRPC handlers see the peer's certificate); HTTPTLS the same for the
	// HTTP listener. Nil: plaintext. Not flags: the binaries build them
	// from their certificate files (package tlsconf).
	GRPCTLS, HTTPTLS *tls.Config
	// GRPCOptions are added to the gRPC server's options (such as the
	// cluster secret's interceptors, package clustersecret). Not flags.
	GRPCOptions []grpc.ServerOption
}

// Defaults of Config.
const (
	DefaultReadHeaderTimeout     = 10 * time.Second
	DefaultBodyTimeout           = 30 * time.Second
	DefaultWriteTimeout          = 2 * time.Minute
	DefaultIdleTimeout           = 2 * time.Minute
	DefaultMaxHeaderBytes        = 64 << 10
	DefaultGRPCHandshakeTimeout  = 10 * time.Second
	DefaultGRPCMaxConnectionIdle = 5 * time.Minute
	DefaultMaxConnsPerIP         = 512
)

// DefaultConfig returns the defaults; MaxConns stays zero, derived from
// the open-file limit when the Process is built.
func DefaultConfig() Config {
	c := Config{}.withDefaults()
	c.MaxConns = 0
	return c
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.BodyTimeout, DefaultBodyTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.GRPCHandshakeTimeout, DefaultGRPCHandshakeTimeout)
	def(&c.GRPCMaxConnectionIdle, DefaultGRPCMaxConnectionIdle)
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.MaxConns == 0 {
		c.MaxConns = connsForFileLimit(openFileLimit())
	}
	return c
}

// connsForFileLimit is the default MaxConns for an open-file limit: half
// of it (at least 64); 10,000 when the limit is unknown.
func connsForFileLimit(nofile uint64) int {
	switch {
	case nofile == 0:
		return 10000
	case nofile/2 < 64:
		return 64
	case nofile/2 > 1<<30:
		return 1 << 30
	}
	return int(nofile / 2)
}

// on returns d, or 0 (no bound) when d is negative.
func on(d time.Duration) time.Duration { return max(d, 0) }

// RegisterFlags adds the bounds as flags of fs, their defaults taken from
// c (DefaultConfig's values).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.ReadHeaderTimeout, "http-header-timeout", c.ReadHeaderTimeout, "HTTP: time to read a request's headers (negative: no limit)")
	fs.DurationVar(&c.BodyTimeout, "http-body-timeout", c.BodyTimeout, "HTTP: time to read a request's whole body once its headers are in; WebSocket subscriptions are not bounded by it (negative: no limit)")
	fs.DurationVar(&c.WriteTimeout, "http-write-timeout", c.WriteTimeout, "HTTP: time to handle a request and write its answer once its headers are in; WebSocket subscriptions are exempt (negative: no limit)")
	fs.DurationVar(&c.IdleTimeout, "http-idle-timeout", c.IdleTimeout, "HTTP: close a keep-alive connection idle this long (negative: never)")
	fs.IntVar(&c.MaxHeaderBytes, "http-max-header-bytes", c.MaxHeaderBytes, "HTTP: largest request headers")
	fs.DurationVar(&c.GRPCHandshakeTimeout, "grpc-handshake-timeout", c.GRPCHandshakeTimeout, "gRPC: time for a new connection to complete its HTTP/2 setup")
	fs.DurationVar(&c.GRPCMaxConnectionIdle, "grpc-max-idle", c.GRPCMaxConnectionIdle, "gRPC: close (GOAWAY) a connection without calls for this long (negative: never)")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", c.MaxConnsPerIP, "connections one client address may hold open over the HTTP and gRPC listeners; more are closed at once (negative: no limit)")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, fmt.Sprintf("connections the process holds open over its HTTP and gRPC listeners; more are closed at once (0: half the open-file limit, here %d; negative: no limit)", connsForFileLimit(openFileLimit())))
}
