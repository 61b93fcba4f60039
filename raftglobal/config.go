package raftglobal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/clustersecret"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is one member of the initial voter set.
type Server struct {
	ID   string
	Addr string // its Raft transport address
}

// Config configures a Store.
type Config struct {
	// NodeID is this node's Raft server ID; stable across restarts.
	NodeID string
	// Dir holds the Raft log, the snapshots and the FSM's SQLite file.
	Dir string

	// Transport carries Raft RPCs. When nil, Open listens with a TCP
	// transport on BindAddr and advertises AdvertiseAddr (BindAddr when
	// empty).
	Transport     raft.Transport
	BindAddr      string
	AdvertiseAddr string
	// TLSServer and TLSClient, when set (both), make the transport Open
	// listens with speak TLS (see NewTLSTransport): TLSServer for the
	// connections it accepts — it should require a client certificate of
	// the cluster CA — and TLSClient for those it makes.
	TLSServer, TLSClient *tls.Config
	// Secret, when set, makes every connection of the transport Open
	// listens with start with the cluster token (see package
	// clustersecret): a peer without the cluster secret is dropped. It
	// goes with or without TLS (with both, both are required).
	Secret *clustersecret.Secret

	// Bootstrap is the initial voter set. A node whose ID is in it
	// bootstraps the cluster with exactly this set if it has no Raft state;
	// every other node starts empty and waits to be joined (Join on the
	// leader). Every bootstrapping node must be given the same set. This
	// node's own entry may leave Addr empty: its transport's address is used
	// (a one-voter cluster on a port picked by the OS).
	Bootstrap []Server

	// TargetVoters is how many voters the leader keeps: when a voter leaves
	// or is removed, or while there are fewer, it promotes live non-voters
	// (never a node recorded as leaving, left or removed). It never demotes
	// a voter. Give every node the same value: 3 (or 5). VoterCheckInterval
	// is how often the leader checks besides after each membership change.
	TargetVoters       int
	VoterCheckInterval time.Duration
	// Probe, when set, tells the leader whether a server's process answers
	// now (the node layer asks its node API). A membership decision counts
	// a server live only if the leader's heartbeats reach it and Probe
	// says yes: heartbeats alone see a process killed a moment ago only
	// at their next round.
	Probe func(ctx context.Context, id string) bool

	// Schema is idempotent DDL (CREATE TABLE IF NOT EXISTS …) for the global
	// tables, applied outside the log when the FSM opens and after every
	// restore. Every node must be given the same Schema.
	Schema []string

	// SnapshotThreshold is how many log entries past the last snapshot make
	// Raft take a new one; SnapshotInterval is how often it checks;
	// TrailingLogs is how many entries a snapshot leaves in the log so a
	// lagging follower can catch up without a snapshot install;
	// SnapshotRetain is how many snapshots stay on disk.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	SnapshotRetain    int

	// Batching turns group commit on: concurrent Writes on the leader share
	// one Raft entry of at most MaxBatch commands. Off, each Write is its own
	// entry (kept for the benchmark's baseline).
	Batching bool
	MaxBatch int
	// MaxPending bounds the Writes queued for the batcher; past it a Write
	// fails with RESOURCE_EXHAUSTED.
	MaxPending int

	// ApplyTimeout bounds a Write (and a metadata write) when ctx has no
	// earlier deadline, including waiting for a leader to be elected.
	ApplyTimeout time.Duration
	// MaxReadWait bounds how long a strong or bookmark read waits for this
	// replica to apply the index it needs, when ctx has no earlier deadline.
	MaxReadWait time.Duration
	// FutureBookmarkGrace is how long a follower waits for its log to reach a
	// bookmark beyond its last index before calling it a bookmark from the
	// future (on the leader the answer is immediate).
	FutureBookmarkGrace time.Duration

	// Raft timers; see hashicorp/raft's Config.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// WALSegmentSize is the size of one raft-wal segment file.
	WALSegmentSize int

	// ReadConns bounds the FSM's read-only connections.
	ReadConns int
	// CacheKiB is SQLite's page cache per connection.
	CacheKiB int
	// StatementTimeout bounds the statements of one read. Writes have no
	// time limit inside the FSM: a limit would make replicas disagree.
	StatementTimeout time.Duration
	// MaxResultRows and MaxResultBytes bound a result; MaxSQLLen bounds a
	// statement's length.
	MaxResultRows  int
	MaxResultBytes int
	MaxSQLLen      int

	// Logger receives the store's and Raft's logs; discarded when nil.
	Logger *slog.Logger
	// Registerer receives the store's metrics; none are registered when nil.
	Registerer prometheus.Registerer
	// OnLeader, when set, is called each time this node has become the
	// leader and committed its first entry of the term, from a goroutine of
	// its own; the node layer publishes its own address there so followers
	// can forward to it at once. It may call the Store.
	OnLeader func()
	// Now is the clock the leader stamps entries with (lunora_now() in the
	// FSM); time.Now when nil.
	Now func() time.Time
}

// DefaultConfig returns production defaults; NodeID, Dir and a transport
// (Transport or BindAddr) must still be set.
func DefaultConfig() Config {
	return Config{
		SnapshotThreshold:   8192,
		SnapshotInterval:    2 * time.Minute,
		TrailingLogs:        10240,
		SnapshotRetain:      2,
		TargetVoters:        3,
		VoterCheckInterval:  time.Second,
		Batching:            true,
		MaxBatch:            256,
		MaxPending:          8192,
		ApplyTimeout:        10 * time.Second,
		MaxReadWait:         5 * time.Second,
		FutureBookmarkGrace: time.Second,
		HeartbeatTimeout:    time.Second,
		ElectionTimeout:     time.Second,
		LeaderLeaseTimeout:  500 * time.Millisecond,
		CommitTimeout:       50 * time.Millisecond,
		WALSegmentSize:      64 << 20,
		ReadConns:           4,
		CacheKiB:            8192,
		StatementTimeout:    5 * time.Second,
		MaxResultRows:       10000,
		MaxResultBytes:      8 << 20,
		MaxSQLLen:           64 << 10,
	}
}

// DefaultLocalConfig returns defaults with short timers and small files for
// tests: several nodes in one process, in-memory or loopback transports.
func DefaultLocalConfig() Config {
	c := DefaultConfig()
	c.SnapshotThreshold = 1024
	c.SnapshotInterval = 200 * time.Millisecond
	c.TrailingLogs = 256
	c.ApplyTimeout = 3 * time.Second
	c.VoterCheckInterval = 100 * time.Millisecond
	c.MaxReadWait = 2 * time.Second
	c.FutureBookmarkGrace = 300 * time.Millisecond
	// Short, but not so short that a leader loaded by -race and a busy
	// 2-core machine loses its lease between two heartbeats (at 100 ms
	// the suite's Raft tests failed now and then on "leadership lost").
	c.HeartbeatTimeout = 250 * time.Millisecond
	c.ElectionTimeout = 250 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.WALSegmentSize = 4 << 20
	c.ReadConns = 2
	c.CacheKiB = 1024
	return c
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("raftglobal: NodeID is required")
	case c.Dir == "":
		return errors.New("raftglobal: Dir is required")
	case c.Transport == nil && c.BindAddr == "":
		return errors.New("raftglobal: Transport or BindAddr is required")
	case (c.TLSServer == nil) != (c.TLSClient == nil):
		return errors.New("raftglobal: TLSServer and TLSClient go together")
	case c.SnapshotThreshold < 1 || c.SnapshotInterval <= 0 || c.SnapshotRetain < 1:
		return errors.New("raftglobal: SnapshotThreshold, SnapshotInterval and SnapshotRetain must be positive")
	case c.TargetVoters < 1 || c.VoterCheckInterval <= 0:
		return errors.New("raftglobal: TargetVoters must be at least 1 and VoterCheckInterval positive")
	case c.MaxBatch < 1 || c.MaxPending < 1:
		return errors.New("raftglobal: MaxBatch and MaxPending must be at least 1")
	case c.ApplyTimeout <= 0 || c.MaxReadWait <= 0 || c.FutureBookmarkGrace <= 0:
		return errors.New("raftglobal: ApplyTimeout, MaxReadWait and FutureBookmarkGrace must be positive")
	case c.HeartbeatTimeout < 5*time.Millisecond || c.ElectionTimeout < 5*time.Millisecond ||
		c.LeaderLeaseTimeout < 5*time.Millisecond || c.CommitTimeout < time.Millisecond:
		return errors.New("raftglobal: Raft timers are too low (heartbeat, election and lease at least 5ms, commit at least 1ms)")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return errors.New("raftglobal: LeaderLeaseTimeout must not exceed HeartbeatTimeout")
	case c.WALSegmentSize < 64<<10:
		return errors.New("raftglobal: WALSegmentSize must be at least 64 KiB")
	case c.ReadConns < 1 || c.CacheKiB < 1:
		return errors.New("raftglobal: ReadConns and CacheKiB must be at least 1")
	case c.StatementTimeout <= 0:
		return errors.New("raftglobal: StatementTimeout must be positive")
	case c.MaxResultRows < 1 || c.MaxResultBytes < 1 || c.MaxSQLLen < 1:
		return errors.New("raftglobal: result and SQL bounds must be positive")
	}
	seen := map[string]bool{}
	for _, s := range c.Bootstrap {
		if s.ID == "" || (s.Addr == "" && s.ID != c.NodeID) {
			return fmt.Errorf("raftglobal: Bootstrap server %+v needs an ID and an Addr", s)
		}
		if seen[s.ID] {
			return fmt.Errorf("raftglobal: Bootstrap names %q twice", s.ID)
		}
		seen[s.ID] = true
	}
	return nil
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Config) raftConfig(logger *slog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	// The FSM's SQLite file is durable on its own and records the index it
	// has applied; restoring the last snapshot into it on every start would
	// throw that away and copy the whole database. Open restores a snapshot
	// itself only when the file is behind it (see fsm.go and DESIGN.md).
	rc.NoSnapshotRestoreOnStart = true
	rc.NoLegacyTelemetry = true
	rc.Logger = newHCLogger(logger.With("component", "raft"), "raft")
	return rc
}
