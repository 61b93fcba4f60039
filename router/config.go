package router

import (
	"errors"
	"log/slog"
	"time"

	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc"
)

// Config configures a Router.
type Config struct {
	// App tells queries (retried after a lost connection) from mutations
	// (never retried once sent). Required.
	App *schema.App
	// Seeds are node-API addresses the first ring is read from. Required
	// unless Gossip is set.
	Seeds []string
	// Gossip, when set, is the gossip view of the cluster
	// (*membership.Membership): it adds node addresses and makes dead
	// nodes fail fast.
	Gossip Gossip
	// ConnsPerNode is how many gRPC connections each node gets. Zero
	// ConnsPerNode, MaxAttempts and RingRefresh take DefaultConfig's
	// values in New.
	ConnsPerNode int
	// MaxAttempts bounds the tries of one request.
	MaxAttempts int
	// RingRefresh is how often the ring is re-read in the background.
	RingRefresh time.Duration
	// DialOptions are added to every node-API connection's (after
	// rpc.NewNodeClient's defaults): the gateway's client certificate
	// when the cluster has mutual TLS.
	DialOptions []grpc.DialOption
	Logger      *slog.Logger
}

// DefaultConfig returns 2 connections per node, 8 attempts per request and
// a ring refresh every second; App and Seeds (or Gossip) must still be set.
func DefaultConfig() Config {
	return Config{ConnsPerNode: 2, MaxAttempts: 8, RingRefresh: time.Second}
}

// Validate reports the first thing that makes c unusable.
func (c Config) Validate() error {
	switch {
	case c.App == nil:
		return errors.New("router: App is required")
	case len(c.Seeds) == 0 && c.Gossip == nil:
		return errors.New("router: Seeds or Gossip is required")
	case c.ConnsPerNode < 1:
		return errors.New("router: ConnsPerNode must be at least 1")
	case c.MaxAttempts < 1:
		return errors.New("router: MaxAttempts must be at least 1")
	case c.RingRefresh <= 0:
		return errors.New("router: RingRefresh must be positive")
	}
	return nil
}

// withDefaults returns c with its zero fields set to DefaultConfig's.
func (c Config) withDefaults() Config {
	def := DefaultConfig()
	if c.ConnsPerNode == 0 {
		c.ConnsPerNode = def.ConnsPerNode
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = def.MaxAttempts
	}
	if c.RingRefresh == 0 {
		c.RingRefresh = def.RingRefresh
	}
	return c
}
