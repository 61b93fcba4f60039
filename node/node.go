package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/handoff"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// Shards is the shard runtime: *shardhost.Host. Its methods are safe for
// concurrent use and honour ctx; Call, Exec and Subscribe answer
// shardhost.Elsewhere (see shardhost.HolderOf) for a shard another node
// holds, which the Node turns into a pull.
type Shards interface {
	Call(ctx context.Context, shardID, function string, args map[string]any) (*api.Result, error)
	Exec(ctx context.Context, shardID, sql string, params map[string]any) (*api.Result, error)
	Status(ctx context.Context) (*api.Status, error)
	Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (*shardhost.Subscription, error)

	// MovesInFlight counts the shards frozen or received for a handoff
	// here (Status).
	MovesInFlight() int
	// StopCreating and SettleAll are a leaving node's first and last
	// steps (shardhost/register.go): it creates no shard once it is
	// leaving, and settles every registration still in doubt, so no
	// never-served copy stays behind.
	StopCreating()
	SettleAll(ctx context.Context) error
	// The shard files' side of handoffs (shardhost/handoff.go), which the
	// handoff package drives.
	handoff.Files
	// Queues and alarm listings (node/queues.go).
	QueueShards
}

// Peer is another node, reached over the node API: *rpc.NodeClient. Its
// methods are safe for concurrent use and honour ctx.
type Peer interface {
	Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error)
	Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error)
	Join(ctx context.Context, req api.JoinRequest) (leaderID string, err error)
	RemoveNode(ctx context.Context, req api.RemoveRequest) error
	RegisterShard(ctx context.Context, shardID, creator string, forwarded bool) (existed bool, holder string, err error)

	Ring(ctx context.Context, minEpoch uint64) (*api.Ring, error)
	UpdateRing(ctx context.Context, req api.RingChange) (uint64, error)
	MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64, forwarded bool) (holder string, index uint64, err error)
	// Pull, Handoff and HandoffDone: the handoff protocol's messages.
	handoff.Peer
}

// Node routes the node API's calls. It is safe for concurrent use.
type Node struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	peers map[string]Peer
	seeds []string // Announce's seeds, also tried by a leaving node

	cluster *cluster
	handoff *handoff.Mover // nil without a global tier

	leaderAddr atomic.Pointer[leaderAddr] // the leader's node-API address, cached
}

// leaderAddr is the node-API address the cluster metadata records for the
// leader id, read at when.
type leaderAddr struct {
	id, addr string
	when     time.Time
}

// leaderAddrTTL bounds how long a leader's recorded address is used
// without reading the metadata again (a leader that restarted on another
// port publishes its new address when it is elected).
const leaderAddrTTL = time.Second

// New returns a Node. Zero fields of cfg.Cluster other than Weight take
// DefaultClusterConfig's values (Config.withDefaults); the result must
// pass Validate.
func New(cfg Config) (*Node, error) {
	if g, ok := cfg.Global.(*raftglobal.Store); ok && g == nil {
		cfg.Global = nil // a nil *Store is no global tier
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: log, peers: map[string]Peer{}, cluster: newCluster()}
	if cfg.Global == nil {
		return n, nil // no cluster: no handoffs (every entry point checks)
	}
	var err error
	n.handoff, err = handoff.New(handoff.Config{
		NodeID: cfg.NodeID, Files: cfg.Shards, Registry: registry{n}, Peers: handoffPeers{n},
		MaxMoves: cfg.Cluster.MaxMoves, MoveBytesPerSec: cfg.Cluster.MoveBytesPerSec,
		Fault: cfg.Cluster.Fault, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return n, nil
}

// registry is the shard registry as the handoff package uses it: this
// replica's reads, and the commit point passed to the leader.
type registry struct{ n *Node }

func (r registry) ShardHolder(ctx context.Context, shardID string) (string, bool, error) {
	return r.n.cfg.Global.ShardHolder(ctx, shardID)
}

func (r registry) MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64) (string, uint64, error) {
	return r.n.MoveShard(ctx, shardID, from, to, toIncarnation, false)
}

func (r registry) Incarnation(ctx context.Context, node string) (uint64, error) {
	return r.n.cfg.Global.NodeIncarnation(ctx, node)
}

// Recorded reports whether this replica has applied a record of this
// process's incarnation (its join of, or leave from, the ring): from
// then on no move fenced to an earlier process of this node can commit.
// A node run without incarnations (0) has nothing to wait for.
func (r registry) Recorded(ctx context.Context) (bool, error) {
	if r.n.cfg.Incarnation == 0 {
		return true, nil
	}
	inc, err := r.n.cfg.Global.NodeIncarnation(ctx, r.n.cfg.NodeID)
	return inc >= r.n.cfg.Incarnation, err
}

func (r registry) WaitApplied(ctx context.Context, index uint64) error {
	return r.n.cfg.Global.WaitApplied(ctx, index)
}

// handoffPeers gives the handoff package this node's cached clients.
type handoffPeers struct{ n *Node }

func (p handoffPeers) Peer(addr string) (handoff.Peer, error) { return p.n.peer(addr) }

// Call runs a function: on its shard, or on the global tier.
func (n *Node) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	if shardID != schema.GlobalGroup {
		var res *api.Result
		err := n.onShard(ctx, shardID, func() (err error) {
			res, err = n.cfg.Shards.Call(ctx, shardID, function, args)
			return err
		})
		return res, err
	}
	fn := n.cfg.App.Function(function)
	if fn == nil {
		return nil, api.Errorf(codes.NotFound, "unknown function %q", function)
	}
	if !fn.Global() {
		return nil, api.Errorf(codes.InvalidArgument, "function %s runs on %s shards, not on the global tier", fn.Name, fn.ShardBy)
	}
	bound, err := fn.BindArgs(args)
	if err != nil {
		return nil, err
	}
	cmd := raftglobal.Command{SQL: fn.SQL, Args: bound}
	res, err := n.global(ctx, fn.Kind == schema.Mutation, cmd, read)
	if errors.As(err, new(*raftglobal.NotLeaderError)) {
		return forwardToLeader(ctx, n, err, read.Forwarded, "the call", func(p Peer) (*api.Result, error) {
			read.Forwarded = true
			return p.Call(ctx, shardID, function, args, read)
		})
	}
	return res, err
}

// Exec runs one admin statement: on a shard, or on the global tier
// ("__global__"), where SELECT and VALUES are reads and everything else goes
// through the Raft log.
func (n *Node) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	if shardID != schema.GlobalGroup {
		var res *api.Result
		err := n.onShard(ctx, shardID, func() (err error) {
			res, err = n.cfg.Shards.Exec(ctx, shardID, sql, params)
			return err
		})
		return res, err
	}
	if n.cfg.Global == nil {
		return nil, api.Errorf(codes.FailedPrecondition, "this app declares no global tables")
	}
	if _, err := schema.ScanStatement(sql); err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "sql: %v", err)
	}
	verb := schema.FirstKeyword(sql)
	write := verb != "SELECT" && verb != "VALUES"
	res, err := n.global(ctx, write, raftglobal.Command{SQL: []string{sql}, Args: params}, read)
	if errors.As(err, new(*raftglobal.NotLeaderError)) {
		return forwardToLeader(ctx, n, err, read.Forwarded, "the statement", func(p Peer) (*api.Result, error) {
			read.Forwarded = true
			return p.Exec(ctx, shardID, sql, params, read)
		})
	}
	return res, err
}

func (n *Node) global(ctx context.Context, write bool, cmd raftglobal.Command, read api.ReadOptions) (*api.Result, error) {
	g := n.cfg.Global
	if g == nil {
		return nil, api.Errorf(codes.FailedPrecondition, "this app declares no global tables")
	}
	if write {
		res, err := g.Write(ctx, cmd)
		if err != nil {
			return nil, err
		}
		res.ShardID, res.Bookmark = schema.GlobalGroup, res.Seq
		return res, nil
	}
	res, err := g.Read(ctx, read, cmd)
	if err != nil {
		return nil, err
	}
	res.ShardID = schema.GlobalGroup
	return res, nil
}

// leaderPeer finds the leader's node-API address in the cluster metadata
// (replicated to every node) and returns a client for it.
func (n *Node) leaderPeer(ctx context.Context, notLeader error) (Peer, error) {
	var nl *raftglobal.NotLeaderError
	errors.As(notLeader, &nl)
	if nl == nil || nl.LeaderID == "" {
		return nil, notLeader
	}
	addr, err := n.addrOf(ctx, nl.LeaderID)
	if err != nil {
		return nil, err
	}
	if addr == "" {
		return nil, api.Errorf(codes.Unavailable, "global tier: the leader %s has not published its address yet; retry", nl.LeaderID)
	}
	return n.peer(addr)
}

// addrOf is the node-API address the cluster metadata records for the
// leader id ("" when none), read from this replica at most once per
// leaderAddrTTL while the leader stays the same: every call a follower
// forwards needs it, and reading the node records is a query.
func (n *Node) addrOf(ctx context.Context, id string) (string, error) {
	if c := n.leaderAddr.Load(); c != nil && c.id == id && time.Since(c.when) < leaderAddrTTL {
		return c.addr, nil
	}
	nodes, err := n.cfg.Global.Nodes(ctx)
	if err != nil {
		return "", err
	}
	for _, info := range nodes {
		if info.ID == id && info.GRPCAddr != "" {
			n.leaderAddr.Store(&leaderAddr{id: id, addr: info.GRPCAddr, when: time.Now()})
			return info.GRPCAddr, nil
		}
	}
	return "", nil
}

// GlobalLeaderAddr is the node-API address of the global tier's leader as
// this node knows it, or "" (rpc.GlobalLeader: a gateway sends global
// writes there directly).
func (n *Node) GlobalLeaderAddr() string {
	g := n.cfg.Global
	if g == nil {
		return ""
	}
	if g.IsLeader() {
		return n.cfg.GRPCAddr
	}
	id, _ := g.Leader()
	if id == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	addr, err := n.addrOf(ctx, id)
	if err != nil {
		return ""
	}
	return addr
}

func (n *Node) peer(addr string) (Peer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.peers[addr]; ok {
		return p, nil
	}
	p, err := n.cfg.Dial(addr)
	if err != nil {
		return nil, api.Errorf(codes.Unavailable, "dial %s: %v", addr, err)
	}
	n.peers[addr] = p
	return p, nil
}

// ID is this node's ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Status reports the shard host's status.
func (n *Node) Status(ctx context.Context) (*api.Status, error) {
	st, err := n.cfg.Shards.Status(ctx)
	if err != nil {
		return nil, err
	}
	st.NodeAddress, st.Version = n.cfg.GRPCAddr, n.cfg.Version
	if n.cfg.Global != nil {
		if st.Cluster, err = n.clusterStatus(ctx); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Join makes a node a member of the global tier (if it is not one yet) and
// records its addresses; on a follower it is passed to the leader.
func (n *Node) Join(ctx context.Context, req api.JoinRequest) (string, error) {
	g := n.cfg.Global
	if g == nil {
		return "", api.Errorf(codes.FailedPrecondition, "this node runs no global tier")
	}
	if req.NodeID == "" || req.RaftAddr == "" || req.GRPCAddr == "" {
		return "", api.Errorf(codes.InvalidArgument, "join needs node_id, raft_addr and grpc_addr")
	}
	if !g.IsLeader() {
		return forwardToLeader(ctx, n, g.NotLeader(), req.Forwarded, "the join", func(p Peer) (string, error) {
			req.Forwarded = true
			return p.Join(ctx, req)
		})
	}
	// A new member joins as a non-voter (the leader promotes it while
	// there are fewer voters than its target); a member keeps its role. A
	// process of the node that has left is refused.
	if err := g.AddServer(ctx, req.NodeID, req.RaftAddr, req.Incarnation); err != nil {
		return "", err
	}
	stale, err := g.SetNodeStateFor(ctx, raftglobal.NodeInfo{ID: req.NodeID, GRPCAddr: req.GRPCAddr, RaftAddr: req.RaftAddr, State: raftglobal.NodeUp}, req.Incarnation)
	if err == nil && stale {
		err = api.Wrap(raftglobal.ErrStaleIncarnation, fmt.Sprintf("node %s incarnation %d", req.NodeID, req.Incarnation))
	}
	return n.cfg.NodeID, err
}

// RemoveNode takes a node out of the ring and then out of the Raft group;
// on a follower it is passed to the leader. A voter is replaced by a live
// non-voter when there is one; a removal that would leave the voters
// without a quorum of live servers is refused (FAILED_PRECONDITION)
// unless req.Force. A leader removing itself hands its leadership over
// first and answers UNAVAILABLE (retry: the new leader removes it). With
// req.Incarnation (a node leaving), a process of the node newer than the
// leaving one is never removed.
func (n *Node) RemoveNode(ctx context.Context, req api.RemoveRequest) error {
	g := n.cfg.Global
	if g == nil {
		return api.Errorf(codes.FailedPrecondition, "this node runs no global tier")
	}
	if req.NodeID == "" {
		return api.Errorf(codes.InvalidArgument, "remove needs a node_id")
	}
	if !g.IsLeader() {
		_, err := forwardToLeader(ctx, n, g.NotLeader(), req.Forwarded, "the removal", func(p Peer) (struct{}, error) {
			req.Forwarded = true
			return struct{}{}, p.RemoveNode(ctx, req)
		})
		return err
	}
	// A removal the Raft group would refuse changes nothing. Then out of
	// the ring first (its shards get new owners, which pull them if the
	// node can still hand them off), then out of the Raft group.
	if err := g.RemoveWith(ctx, req.NodeID, raftglobal.RemoveOptions{Force: req.Force, DryRun: true}); err != nil {
		return err
	}
	_, err := n.UpdateRing(ctx, api.RingChange{NodeID: req.NodeID, Remove: true, Incarnation: req.Incarnation})
	if errors.Is(err, raftglobal.ErrStaleIncarnation) {
		return err
	}
	if err != nil && api.CodeOf(err) != codes.FailedPrecondition {
		return err
	}
	if err := g.RemoveWith(ctx, req.NodeID, raftglobal.RemoveOptions{Force: req.Force}); err != nil {
		return err
	}
	state := raftglobal.NodeRemoved
	if req.Incarnation > 0 {
		state = raftglobal.NodeLeft
	}
	return g.MarkNode(ctx, req.NodeID, state)
}

// Probe reports whether node id answers its node API now. The global
// tier's leader asks before a membership change counts a server live
// (raftglobal.Config.Probe): its heartbeats see a process killed a moment
// ago only at their next round. A node whose address is not recorded is
// left to the heartbeats.
func (n *Node) Probe(ctx context.Context, id string) bool {
	infos, err := n.cfg.Global.Nodes(ctx)
	if err != nil {
		return true
	}
	for _, in := range infos {
		if in.ID != id || in.GRPCAddr == "" {
			continue
		}
		p, err := n.peer(in.GRPCAddr)
		if err != nil {
			return false
		}
		_, err = p.Ring(ctx, 0)
		return err == nil
	}
	return true
}

// RegisterShard records a shard in the registry as held by creator, the
// node creating it (create-if-absent) and reports whether it was already there and who
// holds it; on a follower it is passed to the leader.
func (n *Node) RegisterShard(ctx context.Context, shardID, creator string, forwarded bool) (bool, string, error) {
	g := n.cfg.Global
	if g == nil {
		return false, "", api.Errorf(codes.FailedPrecondition, "this node runs no global tier")
	}
	existed, holder, _, err := g.RegisterShard(ctx, shardID, creator)
	if errors.As(err, new(*raftglobal.NotLeaderError)) {
		type answer struct {
			existed bool
			holder  string
		}
		a, err := forwardToLeader(ctx, n, err, forwarded, "the registration of shard "+shardID, func(p Peer) (answer, error) {
			existed, holder, err := p.RegisterShard(ctx, shardID, creator, true)
			return answer{existed, holder}, err
		})
		return a.existed, a.holder, err
	}
	return existed, holder, err
}

// ShardHolder reports, from this node's replica of the registry, whether
// it has the shard and which node holds its file.
func (n *Node) ShardHolder(ctx context.Context, shardID string) (string, bool, error) {
	if n.cfg.Global == nil {
		return "", false, nil
	}
	return n.cfg.Global.ShardHolder(ctx, shardID)
}

// PublishSelf records this node's addresses in the cluster metadata; the
// global tier calls it when this node becomes the leader.
func (n *Node) PublishSelf(ctx context.Context) {
	g := n.cfg.Global
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := g.SetNodeState(ctx, raftglobal.NodeInfo{ID: n.cfg.NodeID, GRPCAddr: n.cfg.GRPCAddr, RaftAddr: g.Addr(), State: "up"})
	if err != nil {
		n.log.Warn("publish this node's address as the new leader", "err", err)
	}
}

// Announce makes this node a known member with its addresses, retrying
// until it succeeds or ctx ends. The leader records itself directly; a
// member follower asks the leader once the leader's address has replicated
// to it; a node that is not a member (a new non-voter, or a node that left
// and is back) asks the seeds — node-API addresses of existing nodes — and
// the nodes its replica of the metadata records. It runs in the background
// at start; a process of the node that has already left is refused
// (ErrStaleIncarnation) and stops it.
func (n *Node) Announce(ctx context.Context, voter bool, seeds []string) error {
	g := n.cfg.Global
	if g == nil {
		return nil
	}
	req := api.JoinRequest{NodeID: n.cfg.NodeID, RaftAddr: g.Addr(), GRPCAddr: n.cfg.GRPCAddr, Voter: voter, Incarnation: n.cfg.Incarnation}
	n.mu.Lock()
	n.seeds = append([]string(nil), seeds...)
	n.mu.Unlock()
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		_, err := n.Join(ctx, req)
		if err != nil && !errors.Is(err, raftglobal.ErrStaleIncarnation) {
			if all := n.knownPeers(ctx); len(all) > 0 {
				var p Peer
				if p, err = n.peer(all[attempt%len(all)]); err == nil {
					_, err = p.Join(ctx, req)
				}
			}
		}
		if err == nil {
			n.log.Info("announced to the global tier", "node", n.cfg.NodeID, "raft", req.RaftAddr, "grpc", req.GRPCAddr, "incarnation", req.Incarnation)
			return nil
		}
		if errors.Is(err, raftglobal.ErrStaleIncarnation) {
			return fmt.Errorf("announce %s: %w", n.cfg.NodeID, err)
		}
		n.log.Debug("announce: retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("announce %s: %w (last error: %v)", n.cfg.NodeID, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// knownPeers is Announce's seeds followed by the node-API addresses of the
// other nodes this replica's metadata records: a node that left the Raft
// group (or has not joined it yet) hears from no leader, and a voter has
// no seeds.
func (n *Node) knownPeers(ctx context.Context) []string {
	n.mu.Lock()
	out := append([]string(nil), n.seeds...)
	n.mu.Unlock()
	infos, err := n.cfg.Global.Nodes(ctx)
	if err != nil {
		return out
	}
	for _, in := range infos {
		if in.ID != n.cfg.NodeID && in.GRPCAddr != "" && in.GRPCAddr != n.cfg.GRPCAddr && !slices.Contains(out, in.GRPCAddr) {
			out = append(out, in.GRPCAddr)
		}
	}
	return out
}
