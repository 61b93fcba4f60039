package handoff

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
)

// Files is this node's shard files as a handoff uses them:
// *shardhost.Host (shardhost/handoff.go) satisfies it. Every method is safe
// for concurrent use on different shards; the handoff calls at most one of
// Freeze, Thaw and Drop at a time for one shard (the registry's holder
// check and the Files' own freeze state keep one move per shard), and
// Receive/Install for a shard only while this node is its owner. Freeze
// and Receive may block on disk (bounded by ctx); the others do not block
// on the network.
type Files interface {
	// Freeze stops serving a shard this node holds (a request waits or is
	// answered SHARD_MOVING), journals the send and returns the closed,
	// checkpointed and summed file. It answers shardhost.Elsewhere (see
	// shardhost.HolderOf) when the shard is held by another node.
	Freeze(ctx context.Context, shardID string) (*shardhost.Frozen, error)
	// Thaw serves a frozen shard again: the move did not commit.
	Thaw(f *shardhost.Frozen) error
	// Drop deletes a frozen shard's files once the move committed and
	// leaves a forward pointer to holder.
	Drop(f *shardhost.Frozen, holder string) error
	// Receive writes a streamed shard beside the shard's place (not served
	// yet), fsyncs it, checks its size and SHA-256 and journals the
	// receive.
	Receive(ctx context.Context, shardID string, r io.Reader, size int64, sum []byte) error
	// Install puts a received shard in place and serves it: the registry
	// names this node its holder.
	Install(shardID string) error
	// ResolveMove settles a journal entry a crash left, given the holder
	// the registry names ("" when the shard is not registered).
	ResolveMove(shardID string, role shardhost.MoveRole, holder string) error
	// PendingMoves lists the journal entries not resolved yet.
	PendingMoves() []shardhost.PendingMove
	// ReceivedCopies lists the shards with a received copy not installed
	// yet, journaled in this run or an earlier one.
	ReceivedCopies() []string
	// Redirect corrects (or, holder "" or this node, drops) the forward
	// pointer a handoff left for a shard.
	Redirect(shardID, holder string)
}

// Registry is the shard registry in the global tier as a handoff uses it.
// Its methods are safe for concurrent use and honour ctx.
type Registry interface {
	// ShardHolder reads, from this node's replica (which may lag the
	// leader), whether the shard is registered and which node holds it.
	ShardHolder(ctx context.Context, shardID string) (holder string, exists bool, err error)
	// MoveShard is the commit point of a move: a compare-and-set through
	// the Raft log (on the leader, wherever it is) that names to the holder
	// only while from holds the shard. It returns the holder after the
	// call and the log index of the write; from == to reads the holder
	// through the log without changing it. It answers NOT_FOUND for a
	// shard that is not registered and UNAVAILABLE while there is no
	// leader (the handoff retries those). toIncarnation, when not 0,
	// fences the move to that process of to: it does not take effect once
	// a newer process of to has been recorded.
	MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64) (holder string, index uint64, err error)
	// Incarnation reads, from this node's replica, the newest recorded
	// process incarnation of node (0: none).
	Incarnation(ctx context.Context, node string) (uint64, error)
	// Recorded reports whether this node's replica holds the record of
	// this process's incarnation: no move fenced to an earlier process of
	// this node can commit any more.
	Recorded(ctx context.Context) (bool, error)
	// WaitApplied waits until this node's replica has applied the log up
	// to index.
	WaitApplied(ctx context.Context, index uint64) error
}

// Peers reaches other nodes' node API. Peer is safe for concurrent use and
// does not block on the network (clients are cached; a connection is made
// on first use).
type Peers interface {
	Peer(addr string) (Peer, error)
}

// Peer is another node as a handoff talks to it: *rpc.NodeClient satisfies
// it. Its methods are safe for concurrent use and honour ctx.
type Peer interface {
	// Handoff streams a frozen shard's file to the node, which returns once
	// its copy is durable and verified (the ack).
	Handoff(ctx context.Context, h api.HandoffHeader, r io.Reader, sum []byte) error
	// HandoffDone tells the node the move committed at index, so it
	// installs its copy now rather than on first access or restart.
	HandoffDone(ctx context.Context, shardID string, index uint64) error
	// Pull asks the node holding a shard to hand it to "to", which owns it
	// at epoch, now; it returns the log index of the move's commit.
	Pull(ctx context.Context, shardID, to string, epoch uint64) (uint64, error)
}

// The crash points where Config.Fault is called, in protocol order.
const (
	// FaultRecvAfterStore: the receiver has made its copy durable and
	// journalled it, and has not acked.
	FaultRecvAfterStore = "recv-after-store"
	// FaultSendAfterAck: the sender has the receiver's ack and has not
	// committed the move in the registry.
	FaultSendAfterAck = "send-after-ack"
	// FaultSendAfterCommit: the move committed and the sender has not
	// dropped its copy (its send journal entry is still there).
	FaultSendAfterCommit = "send-after-commit"
)

// Config configures a Mover.
type Config struct {
	// NodeID is this node's ID, the sender or receiver a move names.
	NodeID   string
	Files    Files
	Registry Registry
	Peers    Peers
	// MaxMoves caps the moves this node sends at once (at least 1).
	MaxMoves int
	// MoveBytesPerSec limits the bytes per second this node streams to
	// others, shared by every move (0: no limit).
	MoveBytesPerSec int64
	// Fault, when set, is called at the crash points (the Fault*
	// constants) with the shard ID, from the goroutine of the move. Crash
	// tests use it to stop a process exactly there; it is nil in
	// production.
	Fault  func(point, shardID string)
	Logger *slog.Logger
}

// Mover runs this node's side of handoffs: the sender's (Move, called by
// rebalancing and by another node's Pull), the receiver's (Receive, Done,
// and Pull to start one), and the restart resolution (ResolvePending). It
// is safe for concurrent use.
type Mover struct {
	cfg Config
	log *slog.Logger

	moves   chan struct{} // MaxMoves tokens
	limiter *rateLimiter
	pulls   sync.Map // shard ID → *pullCall: one pull per shard at a time
	// streams are the streams under way here (sent and received), for
	// Streams: *progress keyed by itself.
	streams sync.Map
	// settling counts the moves whose commit outcome is being settled in
	// the background (send.go): their local copy goes only when it is.
	settling sync.WaitGroup
}

// New returns a Mover.
func New(cfg Config) (*Mover, error) {
	switch {
	case cfg.NodeID == "":
		return nil, errors.New("handoff: NodeID is required")
	case cfg.Files == nil || cfg.Registry == nil || cfg.Peers == nil:
		return nil, errors.New("handoff: Files, Registry and Peers are required")
	case cfg.MaxMoves < 1:
		return nil, errors.New("handoff: MaxMoves must be at least 1")
	case cfg.MoveBytesPerSec < 0:
		return nil, errors.New("handoff: MoveBytesPerSec must not be negative")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Mover{cfg: cfg, log: log, moves: make(chan struct{}, cfg.MaxMoves)}
	if cfg.MoveBytesPerSec > 0 {
		m.limiter = &rateLimiter{perSec: float64(cfg.MoveBytesPerSec)}
	}
	return m, nil
}

// MaxMoves is how many moves this node sends at once.
func (m *Mover) MaxMoves() int { return cap(m.moves) }

func (m *Mover) fault(point, shardID string) {
	if f := m.cfg.Fault; f != nil {
		f(point, shardID)
	}
}
