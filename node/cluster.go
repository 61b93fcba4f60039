package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/placement"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// The cluster: the ring of nodes lives in the global tier as numbered
// epochs; a shard's owner is the ring's placement of its ID, and its holder
// (the node with its file) is in the shard registry. A node serves a shard
// only when it owns it at its newest epoch and holds it; when it owns a
// shard another node holds, it pulls the shard (lazy pull), and after every
// epoch change it pushes the shards it holds but no longer owns
// (rebalancing). Each move is a handoff (package handoff, handoff/DESIGN.md;
// the files' side in shardhost/handoff.go) whose commit
// point is the registry's compare-and-set of the holder.

// ringView is one ring epoch, ready for lookups.
type ringView struct {
	epoch uint64
	ring  *placement.Ring // nil before the first epoch
	nodes []api.RingNode
	addrs map[string]string // node ID → node-API address, every recorded node
	state map[string]string
}

func (v *ringView) owner(shardID string) string {
	if v.ring == nil {
		return ""
	}
	return string(v.ring.Owner(shardID))
}

// cluster is the Node's cluster state.
type cluster struct {
	view    atomic.Pointer[ringView]
	refresh sync.Mutex // one refresh at a time
	changed chan struct{}

	leaving atomic.Bool
	// everInRing: this process's view of the ring has had this node in it
	// (before that, it created, pulled and received no shard).
	everInRing atomic.Bool
}

func newCluster() *cluster {
	c := &cluster{changed: make(chan struct{}, 1)}
	c.view.Store(&ringView{})
	return c
}

// Ring returns this node's newest ring epoch (waiting, bounded by ctx, for
// its replica to reach minEpoch) with every node's address and state.
func (n *Node) Ring(ctx context.Context, minEpoch uint64) (*api.Ring, error) {
	if n.cfg.Global == nil {
		return nil, api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	v, err := n.awaitEpoch(ctx, minEpoch)
	if err != nil {
		return nil, err
	}
	out := &api.Ring{Epoch: v.epoch, Nodes: append([]api.RingNode(nil), v.nodes...)}
	ids := make([]string, 0, len(v.addrs))
	for id := range v.addrs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		out.Members = append(out.Members, api.RingNode{ID: id, GRPCAddr: v.addrs[id], State: v.state[id]})
	}
	return out, nil
}

// refreshRing reads the newest epoch and the node addresses from this
// replica and publishes them if the epoch is new (or addresses changed).
func (n *Node) refreshRing(ctx context.Context) (*ringView, error) {
	c := n.cluster
	c.refresh.Lock()
	defer c.refresh.Unlock()
	g := n.cfg.Global
	epoch, members, err := g.Ring(ctx)
	if err != nil {
		return c.view.Load(), err
	}
	infos, err := g.Nodes(ctx)
	if err != nil {
		return c.view.Load(), err
	}
	v := &ringView{epoch: epoch, addrs: map[string]string{}, state: map[string]string{}}
	for _, in := range infos {
		v.addrs[in.ID], v.state[in.ID] = in.GRPCAddr, in.State
	}
	if len(members) > 0 {
		pm := make([]placement.Member, len(members))
		for i, m := range members {
			pm[i] = placement.Member{ID: placement.NodeID(m.ID), Weight: m.Weight}
			v.nodes = append(v.nodes, api.RingNode{ID: m.ID, Weight: m.Weight, GRPCAddr: v.addrs[m.ID], State: v.state[m.ID]})
		}
		if v.ring, err = placement.NewRing(pm); err != nil {
			return c.view.Load(), api.Errorf(codes.Internal, "ring epoch %d: %v", epoch, err)
		}
	}
	old := c.view.Load()
	c.view.Store(v)
	if inRing(v, n.cfg.NodeID) {
		c.everInRing.Store(true)
	}
	if v.epoch != old.epoch {
		n.log.Info("ring epoch", "epoch", v.epoch, "nodes", len(v.nodes))
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
	return v, nil
}

// awaitEpoch returns a view at least as new as epoch, refreshing from this
// replica until it has it (bounded by ctx and 5 s).
func (n *Node) awaitEpoch(ctx context.Context, epoch uint64) (*ringView, error) {
	v := n.cluster.view.Load()
	if v.epoch >= epoch && v.addrs != nil {
		return v, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		v, err := n.refreshRing(ctx)
		if err == nil && v.epoch >= epoch {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return nil, api.Errorf(codes.Unavailable, "node %s has ring epoch %d, the request was routed at %d; retry", n.cfg.NodeID, v.epoch, epoch)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// onShard runs do for a shard this node must serve: it refuses a shard
// another node owns at the newest epoch (NOT_OWNER), and pulls a shard it
// owns but another node holds before running do again.
func (n *Node) onShard(ctx context.Context, shardID string, do func() error) error {
	if n.cfg.Global == nil {
		return do()
	}
	if shardID == "" {
		shardID = schema.RootShard
	}
	v, err := n.awaitEpoch(ctx, api.RingEpochOf(ctx))
	if err != nil {
		return err
	}
	if owner := v.owner(shardID); owner != "" && owner != n.cfg.NodeID {
		return api.NotOwner(shardID, owner, v.epoch)
	}
	err = do()
	holder := shardhost.HolderOf(err)
	if holder == "" || holder == n.cfg.NodeID || v.ring == nil {
		return err
	}
	// The holder named may be a forward pointer this node left when it
	// handed the shard off, and the shard may have moved on since: the
	// registry decides where to pull from.
	if holder, err = n.handoff.Holder(ctx, shardID, holder); err != nil {
		return err
	}
	if holder != n.cfg.NodeID {
		if err := n.handoff.Pull(ctx, shardID, holder, v.addrs[holder], v.epoch); err != nil {
			return err
		}
	}
	return do()
}

// Pull hands a shard this node holds to the node that owns it at epoch (or
// newer) and returns the log index of the move's commit.
func (n *Node) Pull(ctx context.Context, shardID, to string, epoch uint64) (uint64, error) {
	if n.cfg.Global == nil {
		return 0, api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	if shardID == "" || to == "" {
		return 0, api.Errorf(codes.InvalidArgument, "pull needs a shard ID and the node to hand it to")
	}
	v, err := n.awaitEpoch(ctx, epoch)
	if err != nil {
		return 0, err
	}
	if owner := v.owner(shardID); owner != to {
		return 0, api.NotOwner(shardID, owner, v.epoch)
	}
	return n.handoff.Move(ctx, shardID, to, v.addrs[to], v.epoch)
}

// MoveShard changes a shard's holder in the registry if from holds it
// (and, toIncarnation not 0, while to's newest recorded process is that
// one; raftglobal.Store.MoveShard), passed to the leader, and returns the
// holder after the call.
func (n *Node) MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64, forwarded bool) (string, uint64, error) {
	g := n.cfg.Global
	if g == nil {
		return "", 0, api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	holder, idx, err := g.MoveShard(ctx, shardID, from, to, toIncarnation)
	if errors.As(err, new(*raftglobal.NotLeaderError)) {
		type answer struct {
			holder string
			index  uint64
		}
		a, err := forwardToLeader(ctx, n, err, forwarded, "the move of shard "+shardID, func(p Peer) (answer, error) {
			holder, idx, err := p.MoveShard(ctx, shardID, from, to, toIncarnation, true)
			return answer{holder, idx}, err
		})
		return a.holder, a.index, err
	}
	return holder, idx, err
}

// ReceiveHandoff stores a shard streamed by its holder (not served until
// HandoffDone or until the registry names this node).
func (n *Node) ReceiveHandoff(ctx context.Context, h api.HandoffHeader, r io.Reader, sum []byte) error {
	if n.cfg.Global == nil {
		return api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	if h.ShardID == "" || h.From == "" || h.Size < 0 || len(sum) != 32 {
		return api.Errorf(codes.InvalidArgument, "a handoff needs a shard ID, its sender, its size and a SHA-256")
	}
	v, err := n.awaitEpoch(ctx, h.Epoch)
	if err != nil {
		return err
	}
	if owner := v.owner(h.ShardID); owner != n.cfg.NodeID {
		return api.NotOwner(h.ShardID, owner, v.epoch)
	}
	return n.handoff.Receive(ctx, h, r, sum)
}

// HandoffDone installs a received shard once this replica has applied the
// move's commit at index.
func (n *Node) HandoffDone(ctx context.Context, shardID string, index uint64) error {
	g := n.cfg.Global
	if g == nil {
		return api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	return n.handoff.Done(ctx, shardID, index)
}

// UpdateRing adds a node to the ring with its weight (or changes its
// weight), or removes it, as a new epoch; passed to the leader. Concurrent
// changes each retry on the epoch they read, so none is lost. A change
// made by a node's process (req.Incarnation) is recorded with the epoch in
// one log entry, so a join that a leave of the same process overtook, or a
// leave of a process a newer one replaced, is refused with
// raftglobal.ErrStaleIncarnation, wherever it arrives in the log.
func (n *Node) UpdateRing(ctx context.Context, req api.RingChange) (uint64, error) {
	g := n.cfg.Global
	if g == nil {
		return 0, api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	id, weight, remove := req.NodeID, req.Weight, req.Remove
	if id == "" || (!remove && weight < 1) {
		return 0, api.Errorf(codes.InvalidArgument, "a ring change needs a node ID and, to add it, a weight of at least 1")
	}
	if !g.IsLeader() {
		return forwardToLeader(ctx, n, g.NotLeader(), req.Forwarded, "the ring change", func(p Peer) (uint64, error) {
			req.Forwarded = true
			return p.UpdateRing(ctx, req)
		})
	}
	op := raftglobal.RingOp{Node: id, Incarnation: req.Incarnation, Leave: remove}
	for attempt := 0; attempt < 20; attempt++ {
		epoch, nodes, err := g.Ring(ctx)
		if err != nil {
			return 0, err
		}
		next := make([]raftglobal.RingNode, 0, len(nodes)+1)
		found := false
		for _, m := range nodes {
			if m.ID == id {
				found = true
				if remove || m.Weight == weight {
					if !remove {
						next = append(next, m)
					}
					continue
				}
				m.Weight = weight
			}
			next = append(next, m)
		}
		switch {
		case remove && !found, !remove && found && len(next) == len(nodes) && sameWeight(nodes, id, weight):
			// The ring has it already; a process's change is still
			// recorded (it orders later ones).
			if req.Incarnation == 0 && !remove {
				return epoch, nil
			}
			next = nil
		case !remove && !found:
			next = append(next, raftglobal.RingNode{ID: id, Weight: weight})
		}
		if next != nil && len(next) == 0 {
			return 0, api.Errorf(codes.FailedPrecondition, "node %s is the last node of the ring; it cannot leave it", id)
		}
		e, created, stale, err := g.ChangeRing(ctx, epoch, next, op)
		switch {
		case err != nil:
			return 0, err
		case stale:
			return 0, api.Wrap(raftglobal.ErrStaleIncarnation, fmt.Sprintf("ring change of node %s (incarnation %d, remove %v)", id, req.Incarnation, remove))
		case created || next == nil:
			if remove && req.Incarnation > 0 {
				// A node's own leave: recorded as leaving (never promoted
				// to voter meanwhile) until it is out of the Raft group.
				if err := g.MarkNode(ctx, id, raftglobal.NodeLeaving); err != nil {
					n.log.Warn("record a node as leaving", "node", id, "err", err)
				}
			}
			return e, nil
		}
	}
	return 0, api.Errorf(codes.Aborted, "the ring kept changing; retry")
}

func inRing(v *ringView, id string) bool {
	for _, m := range v.nodes {
		if m.ID == id {
			return true
		}
	}
	return false
}

func sameWeight(nodes []raftglobal.RingNode, id string, w int) bool {
	for _, m := range nodes {
		if m.ID == id {
			return m.Weight == w
		}
	}
	return false
}

// JoinRing adds this node to the ring with its configured weight, retrying
// until it succeeds or ctx ends (it runs at start, once the node is known
// to the global tier). A restarted node takes its place back: same ID,
// same weight, so the same shards (no new epoch when it never left). It
// stops, without joining, once this process has left.
func (n *Node) JoinRing(ctx context.Context) error {
	w := n.cfg.Cluster.Weight
	if n.cfg.Global == nil || w < 1 {
		return nil
	}
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		epoch, err := n.UpdateRing(ctx, api.RingChange{NodeID: n.cfg.NodeID, Weight: w, Incarnation: n.cfg.Incarnation})
		if errors.Is(err, raftglobal.ErrStaleIncarnation) {
			return fmt.Errorf("join the ring: %w", err)
		}
		if err == nil {
			_, err = n.awaitEpoch(ctx, epoch)
		}
		if err == nil {
			n.log.Info("in the ring", "node", n.cfg.NodeID, "epoch", epoch, "weight", w, "incarnation", n.cfg.Incarnation)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join the ring: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
	}
}

// LeaveOptions adjust Leave.
type LeaveOptions struct {
	// Force leaves the Raft group even when the voters left would have no
	// quorum of live servers.
	Force bool
	// TierTimeout bounds leaving the Raft group, after the handoffs.
	TierTimeout time.Duration
}

// Leave takes this node out of the ring, hands off every shard it holds to
// its new owner (bounded by ctx), then takes it out of the Raft group
// (bounded by opts.TierTimeout; a voter is replaced by a live non-voter,
// and a leader hands its leadership over first). Call it once this
// process's own join has stopped (nodeproc does): the leave is recorded
// with the process's incarnation, so a join of this process that is still
// in flight somewhere is refused when it lands. It returns how many shards
// it could not move. If leaving the Raft group would leave the voters
// without a quorum of live servers, the node stays a member and the error
// says so (errors.Is raftglobal.ErrWouldLoseQuorum), unless opts.Force.
func (n *Node) Leave(ctx context.Context, opts LeaveOptions) (int, error) {
	if n.cfg.Global == nil {
		return 0, nil
	}
	if opts.TierTimeout <= 0 {
		opts.TierTimeout = 30 * time.Second
	}
	n.cluster.leaving.Store(true)
	n.cfg.Shards.StopCreating()
	left, ringErr := n.leaveRing(ctx)
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.TierTimeout)
	defer cancel()
	if err := n.leaveTier(tctx, opts.Force); errors.Is(err, raftglobal.ErrWouldLoseQuorum) {
		return left, errors.Join(ringErr, fmt.Errorf("this node stays a voter of the global tier (start it again to give the voters their quorum back, or stop it with -force-leave): %w", err))
	} else if err != nil {
		return left, errors.Join(ringErr, fmt.Errorf("leave the global tier: %w", err))
	}
	return left, ringErr
}

// leaveRing takes this node out of the ring and hands its shards off.
func (n *Node) leaveRing(ctx context.Context) (int, error) {
	change := api.RingChange{NodeID: n.cfg.NodeID, Remove: true, Incarnation: n.cfg.Incarnation}
	if n.cfg.Cluster.Weight < 1 {
		// Never in the ring: the leave is only recorded.
		_, err := n.onAnyNode(ctx, func(p Peer) (uint64, error) { return p.UpdateRing(ctx, change) }, func() (uint64, error) { return n.UpdateRing(ctx, change) })
		if err != nil {
			n.log.Warn("record this node's leave", "err", err)
		}
		return 0, nil
	}
	var epoch uint64
	var err error
	// Bounded: a node removed from the global tier cannot reach it.
	uctx, ucancel := context.WithTimeout(ctx, 15*time.Second)
	defer ucancel()
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		epoch, err = n.onAnyNode(uctx, func(p Peer) (uint64, error) { return p.UpdateRing(uctx, change) }, func() (uint64, error) { return n.UpdateRing(uctx, change) })
		if err == nil || uctx.Err() != nil || api.CodeOf(err) != codes.Unavailable {
			break
		}
		time.Sleep(backoff)
	}
	if err != nil {
		if ids, _, lerr := n.cfg.Global.HeldShards(ctx, n.cfg.NodeID, "", 1); lerr == nil && len(ids) == 0 {
			return 0, nil // out of reach (removed, say) and holding nothing
		}
		return n.stillHeld(), fmt.Errorf("leave the ring: %w", err)
	}
	// The leave's epoch is committed: no move to this node and no
	// registration by it can take effect any more, so the registry's
	// answers about its received copies and its registrations in doubt
	// are final. A received copy the registry names it the holder of is
	// installed (and handed off below); the others go, and so do copies
	// of new shards whose registration did not commit — a node that left
	// keeps no copy of anything.
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	n.handoff.ResolveReceived(rctx)
	rcancel()
	defer func() {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer scancel()
		if err := n.cfg.Shards.SettleAll(sctx); err != nil {
			n.log.Warn("leave: settle the registrations in doubt", "err", err)
		}
	}()
	if !n.cluster.everInRing.Load() && n.stillHeld() == 0 {
		// Stopped before this process ever saw itself in the ring (its
		// replica may not even be a member yet, and never reach the
		// leave's epoch): it holds nothing to hand off.
		n.log.Info("left the ring before taking any shard", "epoch", epoch)
		return 0, nil
	}
	for {
		v, err := n.awaitEpoch(ctx, epoch)
		if err != nil {
			return n.stillHeld(), err
		}
		left, err := n.rebalance(ctx, v)
		if err == nil && left == 0 {
			// A move whose commit outcome was unknown may have landed (the
			// registry no longer names this node) before its old copy was
			// dropped: that happens in the background, so wait for it.
			if err := n.handoff.WaitSettled(ctx); err != nil {
				return 0, fmt.Errorf("leave: every shard handed off, but %w", err)
			}
			n.log.Info("left the ring; every shard handed off", "epoch", v.epoch)
			return 0, nil
		}
		if ctx.Err() != nil {
			// Count what is still here: a pass cut short by the
			// deadline has no count of its own.
			left = n.stillHeld()
			return left, fmt.Errorf("leave: %d shards not handed off: %w", left, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leaveTier takes this node out of the Raft group through the leader,
// retrying while leadership moves (a leader leaving hands it over first).
func (n *Node) leaveTier(ctx context.Context, force bool) error {
	req := api.RemoveRequest{NodeID: n.cfg.NodeID, Force: force, Incarnation: n.cfg.Incarnation}
	if servers, err := n.cfg.Global.Servers(); err == nil && len(servers) == 1 && servers[0].ID == n.cfg.NodeID {
		n.log.Info("the only member of the global tier stays its member")
		return nil
	}
	start := time.Now()
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		_, err := n.onAnyNode(ctx, func(p Peer) (uint64, error) { return 0, p.RemoveNode(ctx, req) }, func() (uint64, error) { return 0, n.RemoveNode(ctx, req) })
		if err == nil {
			n.log.Info("left the global tier", "node", n.cfg.NodeID, "took", time.Since(start))
			return nil
		}
		if api.CodeOf(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
	}
}

// onAnyNode runs local (which reaches the leader through this node's Raft
// member) and, when that finds no leader, remote on the other nodes this
// replica records, in turn: a node taken out of the Raft group hears from
// no leader but can still ask another node.
func (n *Node) onAnyNode(ctx context.Context, remote func(Peer) (uint64, error), local func() (uint64, error)) (uint64, error) {
	v, err := local()
	if err == nil || api.CodeOf(err) != codes.Unavailable {
		return v, err
	}
	for _, addr := range n.knownPeers(ctx) {
		p, perr := n.peer(addr)
		if perr != nil {
			continue
		}
		v, rerr := remote(p)
		if rerr == nil || api.CodeOf(rerr) != codes.Unavailable {
			return v, rerr
		}
	}
	return v, err
}

// stillHeld counts, in this node's replica of the registry, the shards it
// holds (bounded in time; -1 when the replica cannot say).
func (n *Node) stillHeld() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	held, after := 0, ""
	for {
		ids, next, err := n.cfg.Global.HeldShards(ctx, n.cfg.NodeID, after, 1000)
		if err != nil {
			return -1
		}
		held += len(ids)
		if next == "" {
			return held
		}
		after = next
	}
}

// rebalance pushes every shard this node holds but does not own at v to
// its owner, MaxMoves at a time. It returns how many are still here.
func (n *Node) rebalance(ctx context.Context, v *ringView) (int, error) {
	if v.ring == nil {
		return 0, nil
	}
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		slots  = make(chan struct{}, n.handoff.MaxMoves())
		after  string
	)
	for {
		ids, next, err := n.cfg.Global.HeldShards(ctx, n.cfg.NodeID, after, 1000)
		if err != nil {
			wg.Wait()
			return -1, err
		}
		for _, id := range ids {
			to := v.owner(id)
			if to == n.cfg.NodeID {
				continue
			}
			slots <- struct{}{}
			wg.Add(1)
			go func(id, to string) {
				defer func() { <-slots; wg.Done() }()
				if _, err := n.handoff.Move(ctx, id, to, v.addrs[to], v.epoch); err != nil {
					failed.Add(1)
					n.log.Debug("rebalance: move failed", "shard", id, "to", to, "err", err)
				}
			}(id, to)
		}
		if next == "" {
			break
		}
		after = next
	}
	wg.Wait()
	return int(failed.Load()), nil
}

// installEvery is how often a node installs the received copies whose
// move committed without a word from their sender (handoff.InstallCommitted).
const installEvery = time.Second

// Run keeps the node's ring view fresh, resolves handoffs a crash left
// unfinished, installs received copies whose move committed, and
// rebalances after every epoch change, until ctx ends.
func (n *Node) Run(ctx context.Context) {
	if n.cfg.Global == nil {
		return
	}
	c := n.cluster
	go n.handoff.ResolvePending(ctx)
	poll := time.NewTicker(n.cfg.Cluster.RingPoll)
	defer poll.Stop()
	every := time.NewTicker(n.cfg.Cluster.RebalanceEvery)
	defer every.Stop()
	install := time.NewTicker(installEvery)
	defer install.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			n.refreshRing(ctx)
			continue
		case <-install.C:
			n.handoff.InstallCommitted(ctx)
			continue
		case <-c.changed:
		case <-every.C:
		}
		if c.leaving.Load() {
			continue // Leave rebalances itself
		}
		if _, err := n.rebalance(ctx, c.view.Load()); err != nil && ctx.Err() == nil {
			n.log.Warn("rebalance", "err", err)
		}
	}
}

// clusterStatus is the ring, each node's shard count and the moves in
// flight here.
func (n *Node) clusterStatus(ctx context.Context) (*api.ClusterStatus, error) {
	r, err := n.Ring(ctx, 0)
	if err != nil {
		return nil, err
	}
	counts, err := n.cfg.Global.ShardsPerHolder(ctx)
	if err != nil {
		return nil, err
	}
	// Raft's configuration as this replica has it; a node that cannot
	// read it shows no Raft role rather than failing the whole status.
	raftRole := map[string]string{}
	if servers, err := n.cfg.Global.Servers(); err == nil {
		for _, s := range servers {
			switch {
			case s.Leader:
				raftRole[s.ID] = api.RaftLeader
			case s.Voter:
				raftRole[s.ID] = api.RaftVoter
			default:
				raftRole[s.ID] = api.RaftNonvoter
			}
		}
	}
	inRing := map[string]bool{}
	for _, m := range r.Nodes {
		inRing[m.ID] = true
	}
	for _, list := range [][]api.RingNode{r.Nodes, r.Members} {
		for i := range list {
			m := &list[i]
			m.Shards, m.Raft, m.InRing = counts[m.ID], raftRole[m.ID], inRing[m.ID]
			if l := n.cfg.Liveness; l != nil {
				m.Alive = l(m.ID)
			}
		}
	}
	return &api.ClusterStatus{Ring: *r, MovesInFlight: int64(n.cfg.Shards.MovesInFlight()), Moves: n.handoff.Streams()}, nil
}

// LocateShard says where a shard lives: its owner on the ring at this
// node's newest epoch and its holder in this replica of the registry.
func (n *Node) LocateShard(ctx context.Context, shardID string) (*api.ShardLocation, error) {
	g := n.cfg.Global
	if g == nil {
		return nil, api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	group, _, err := n.cfg.App.ParseShardID(shardID)
	if err != nil {
		return nil, err
	}
	if group == schema.GlobalGroup {
		return nil, api.Errorf(codes.InvalidArgument, "%s is the global tier, not a shard", shardID)
	}
	if group == schema.RootShard {
		shardID = schema.RootShard
	}
	v, err := n.awaitEpoch(ctx, 0)
	if err != nil {
		return nil, err
	}
	holder, exists, err := g.ShardHolder(ctx, shardID)
	if err != nil {
		return nil, err
	}
	return &api.ShardLocation{ShardID: shardID, Epoch: v.epoch, Owner: v.owner(shardID), Holder: holder, Registered: exists}, nil
}

// ListShards pages through the registry: one group's shards, or (holder
// set) the shards one node holds.
func (n *Node) ListShards(ctx context.Context, group, holder, after string, limit int) ([]string, string, error) {
	g := n.cfg.Global
	if g == nil {
		return nil, "", api.Errorf(codes.FailedPrecondition, "this node runs no shard registry")
	}
	if holder != "" {
		return g.HeldShards(ctx, holder, after, limit)
	}
	return g.ListShards(ctx, group, after, limit)
}
