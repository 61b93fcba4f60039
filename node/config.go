package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lunora/lunora/schema"
)

// Config configures a Node.
type Config struct {
	App    *schema.App
	Shards Shards
	// Global is the global tier (*raftglobal.Store); nil when the app has
	// no global tables.
	Global Global
	// NodeID and GRPCAddr are this node's identity and node-API address,
	// recorded in the cluster metadata so followers can reach the leader.
	NodeID   string
	GRPCAddr string
	// Incarnation identifies this process of the node: it must grow with
	// every start (nodeproc persists it). Joins and leaves carry it, so a
	// join a leave of the same process overtook is refused (cluster.go).
	Incarnation uint64
	// Dial returns a client for another node's node API. Clients are cached.
	Dial func(addr string) (Peer, error)
	// Cluster configures the ring, handoffs and rebalancing; it takes
	// effect with a global tier. Zero fields other than Weight take
	// DefaultClusterConfig's values in New.
	Cluster ClusterConfig
	// Liveness reports a node's liveness in this process's gossip view
	// ("alive", "suspect", "dead", "left"; "" when unknown). Status shows
	// it beside each node. Nil without gossip.
	Liveness func(nodeID string) string
	// Version is reported by Status.
	Version string
	Logger  *slog.Logger
}

// DefaultConfig returns a Config with DefaultClusterConfig; App, Shards
// and, with a global tier, Global, Dial, NodeID and GRPCAddr must still be
// set.
func DefaultConfig() Config {
	return Config{Cluster: DefaultClusterConfig()}
}

// Validate reports the first thing that makes c unusable.
func (c Config) Validate() error {
	switch {
	case c.App == nil || c.Shards == nil:
		return errors.New("node: App and Shards are required")
	case len(c.App.Groups[schema.GlobalGroup]) > 0 && c.Global == nil:
		return errors.New("node: the app has global tables but no global tier is configured")
	case c.Global != nil && c.Dial == nil:
		return errors.New("node: Dial is required with a global tier (to reach the leader)")
	}
	if err := c.Cluster.Validate(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// withDefaults returns c with the zero fields of c.Cluster (other than
// Weight, where 0 means out of the ring) set to DefaultClusterConfig's.
func (c Config) withDefaults() Config {
	def := DefaultClusterConfig()
	if c.Cluster.MaxMoves == 0 {
		c.Cluster.MaxMoves = def.MaxMoves
	}
	if c.Cluster.RingPoll == 0 {
		c.Cluster.RingPoll = def.RingPoll
	}
	if c.Cluster.RebalanceEvery == 0 {
		c.Cluster.RebalanceEvery = def.RebalanceEvery
	}
	return c
}

// ClusterConfig configures the cluster part of a Node.
type ClusterConfig struct {
	// Weight is this node's share of shards relative to the others; 0
	// keeps the node out of the ring (it only forwards).
	Weight int
	// MaxMoves caps the handoffs this node sends at once.
	MaxMoves int
	// MoveBytesPerSec limits the bytes per second this node streams to
	// others in handoffs (0: no limit).
	MoveBytesPerSec int64
	// RingPoll is how often the node looks for a new ring epoch in its
	// replica of the metadata.
	RingPoll time.Duration
	// RebalanceEvery re-runs rebalancing even without an epoch change, to
	// finish moves that failed.
	RebalanceEvery time.Duration
	// Fault, when set, is called at the handoff's crash points
	// (handoff.FaultSendAfterAck, FaultSendAfterCommit,
	// FaultRecvAfterStore) with the shard ID. Crash tests inject it to stop
	// a process exactly there; production wiring leaves it nil.
	Fault func(point, shardID string)
}

// DefaultClusterConfig returns weight 1, 8 concurrent moves, no rate
// limit, a 200 ms ring poll and a rebalance pass every 10 s.
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{Weight: 1, MaxMoves: 8, RingPoll: 200 * time.Millisecond, RebalanceEvery: 10 * time.Second}
}

// DefaultLocalClusterConfig is DefaultClusterConfig with short timers for
// tests: a 20 ms ring poll and a rebalance pass every second.
func DefaultLocalClusterConfig() ClusterConfig {
	c := DefaultClusterConfig()
	c.RingPoll, c.RebalanceEvery = 20*time.Millisecond, time.Second
	return c
}

// Validate reports the first thing that makes c unusable.
func (c ClusterConfig) Validate() error {
	switch {
	case c.Weight < 0:
		return errors.New("cluster: Weight must not be negative")
	case c.MaxMoves < 1:
		return errors.New("cluster: MaxMoves must be at least 1")
	case c.MoveBytesPerSec < 0:
		return errors.New("cluster: MoveBytesPerSec must not be negative")
	case c.RingPoll <= 0:
		return errors.New("cluster: RingPoll must be positive")
	case c.RebalanceEvery <= 0:
		return errors.New("cluster: RebalanceEvery must be positive")
	}
	return nil
}
