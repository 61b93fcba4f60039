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
// (rebalancing). Each move is a handoff (shardhost/handoff.go) whose commit
// point is the registry's compare-and-set of the holder.

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
	// ("send-after-ack", "send-after-commit", "recv-after-store") with
	// the shard ID. Crash tests use it to stop a process exactly there.
	Fault func(point, shardID string)
}

// DefaultClusterConfig returns weight 1, 8 concurrent moves, no rate
// limit, a 200 ms ring poll and a rebalance pass every 10 s.
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{Weight: 1, MaxMoves: 8, RingPoll: 200 * time.Millisecond, RebalanceEvery: 10 * time.Second}
}

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

	moves   chan struct{} // MaxMoves tokens
	limiter *rateLimiter
	pulls   sync.Map // shard ID → *pullCall: one pull per shard at a time
	leaving atomic.Bool
	// everInRing: this process's view of the ring has had this node in it
	// (before that, it created, pulled and received no shard).
	everInRing atomic.Bool
	// streams are the handoff streams under way here (sent and received),
	// for Status: *moveProgress keyed by itself.
	streams sync.Map
}

// moveProgress is one handoff stream under way: bytes counts what went
// through so far.
type moveProgress struct {
	shardID, from, to string
	size              int64
	start             time.Time
	bytes             atomic.Int64
}

// track registers a stream for Status until the returned func is called;
// r is wrapped to count the bytes that go through it.
func (c *cluster) track(shardID, from, to string, size int64, r io.Reader) (io.Reader, func()) {
	p := &moveProgress{shardID: shardID, from: from, to: to, size: size, start: time.Now()}
	c.streams.Store(p, struct{}{})
	return &countingReader{r: r, n: &p.bytes}, func() { c.streams.Delete(p) }
}

// streamsUnderWay lists the handoff streams under way, oldest first.
func (c *cluster) streamsUnderWay() []api.ShardMove {
	var out []api.ShardMove
	c.streams.Range(func(k, _ any) bool {
		p := k.(*moveProgress)
		out = append(out, api.ShardMove{ShardID: p.shardID, From: p.from, To: p.to, Bytes: p.bytes.Load(), Size: p.size, Elapsed: time.Since(p.start)})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Elapsed > out[j].Elapsed })
	return out
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

type pullCall struct {
	done chan struct{}
	err  error
}

func newCluster(cfg ClusterConfig) *cluster {
	c := &cluster{changed: make(chan struct{}, 1), moves: make(chan struct{}, max(cfg.MaxMoves, 1))}
	if cfg.MoveBytesPerSec > 0 {
		c.limiter = &rateLimiter{perSec: float64(cfg.MoveBytesPerSec)}
	}
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
	if holder, err = n.registryHolder(ctx, shardID, holder); err != nil {
		return err
	}
	if holder != n.cfg.NodeID {
		if err := n.pull(ctx, shardID, holder, v); err != nil {
			return err
		}
	}
	return do()
}

// registryHolder returns the shard's holder in the registry, given the
// holder a request was answered with: when this replica of the registry
// names the same node it is the answer; otherwise (a stale forward
// pointer, or a replica that has not applied the latest move) the holder
// is read through the log, and the pointer is corrected to it.
func (n *Node) registryHolder(ctx context.Context, shardID, named string) (string, error) {
	if h, exists, err := n.cfg.Global.ShardHolder(ctx, shardID); err == nil && exists && h == named {
		return named, nil
	}
	self := n.cfg.NodeID
	holder, _, err := n.commitMove(ctx, shardID, self, self)
	if api.CodeOf(err) == codes.NotFound {
		holder, err = "", nil
	}
	if err != nil {
		return "", err
	}
	if holder != named {
		n.log.Info("forward pointer corrected from the registry", "shard", shardID, "pointer", named, "holder", holder)
		n.cfg.Shards.Redirect(shardID, holder)
	}
	if holder == "" {
		return self, nil // not registered: nothing to pull
	}
	return holder, nil
}

// pull asks the holder of a shard this node owns to hand it off here now.
// Concurrent requests for one shard share one pull.
func (n *Node) pull(ctx context.Context, shardID, holder string, v *ringView) error {
	call := &pullCall{done: make(chan struct{})}
	if prev, loaded := n.cluster.pulls.LoadOrStore(shardID, call); loaded {
		p := prev.(*pullCall)
		select {
		case <-p.done:
			return p.err
		case <-ctx.Done():
			return api.Wrap(shardhost.ErrShardMoving, "shard "+shardID+": "+ctx.Err().Error())
		}
	}
	defer func() {
		n.cluster.pulls.Delete(shardID)
		close(call.done)
	}()
	call.err = n.pullOnce(ctx, shardID, holder, v)
	return call.err
}

func (n *Node) pullOnce(ctx context.Context, shardID, holder string, v *ringView) error {
	addr := v.addrs[holder]
	if addr == "" {
		return nodeDown(shardID, holder, "its address is not recorded")
	}
	p, err := n.peer(addr)
	if err != nil {
		return nodeDown(shardID, holder, err.Error())
	}
	if _, err := p.Pull(ctx, shardID, n.cfg.NodeID, v.epoch); err != nil {
		if api.CodeOf(err) == codes.Unavailable {
			if r, _ := api.ReasonOf(err); r == "" {
				return nodeDown(shardID, holder, err.Error())
			}
		}
		return err
	}
	return nil
}

func nodeDown(shardID, holder, why string) *api.Error {
	return &api.Error{
		Code:   codes.Unavailable,
		Msg:    fmt.Sprintf("shard %s is held by node %s, which cannot be reached: %s", shardID, holder, why),
		Reason: api.ReasonNodeDown,
		Meta:   map[string]string{"shard": shardID, "node": holder},
	}
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
	return n.moveShard(ctx, shardID, to, v)
}

// moveShard hands a shard this node holds to another node: freeze, stream,
// commit in the registry, drop (or thaw when the move did not commit).
func (n *Node) moveShard(ctx context.Context, shardID, to string, v *ringView) (uint64, error) {
	c := n.cluster
	select {
	case c.moves <- struct{}{}:
		defer func() { <-c.moves }()
	case <-ctx.Done():
		return 0, api.Wrap(shardhost.ErrShardMoving, "shard "+shardID+": waiting for a move slot: "+ctx.Err().Error())
	}
	self := n.cfg.NodeID
	holder, exists, err := n.cfg.Global.ShardHolder(ctx, shardID)
	if err != nil {
		return 0, err
	}
	if exists && holder == to {
		return 0, nil // moved already (by rebalancing, say)
	}
	if !exists || holder != self {
		return 0, shardhost.Elsewhere(shardID, holder)
	}
	addr := v.addrs[to]
	if addr == "" {
		return 0, api.Errorf(codes.Unavailable, "node %s has no recorded address", to)
	}
	p, err := n.peer(addr)
	if err != nil {
		return 0, err
	}
	f, err := n.cfg.Shards.Freeze(ctx, shardID)
	if shardhost.HolderOf(err) == to {
		return 0, nil // it moved there while we looked
	}
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := n.send(ctx, p, f, to, v.epoch); err != nil {
		n.thaw(f)
		return 0, fmt.Errorf("hand off shard %s to %s: %w", shardID, to, err)
	}
	n.fault("send-after-ack", shardID)
	holder, idx, err := n.commitMove(ctx, shardID, self, to)
	if err != nil {
		// The outcome is unknown: the shard stays frozen until the
		// registry says who holds it.
		go n.settle(f, to)
		return 0, err
	}
	if holder != to {
		n.thaw(f)
		return 0, api.Errorf(codes.Aborted, "shard %s: the registry names %q as its holder; the move did not commit", shardID, holder)
	}
	n.fault("send-after-commit", shardID)
	if err := n.cfg.Shards.Drop(f, to); err != nil {
		n.log.Error("moved shard: delete the old copy", "shard", shardID, "err", err)
	}
	if err := p.HandoffDone(ctx, shardID, idx); err != nil {
		// The new holder installs its copy on first access or restart.
		n.log.Warn("moved shard: tell the new holder", "shard", shardID, "to", to, "err", err)
	}
	n.log.Debug("moved shard", "shard", shardID, "to", to, "bytes", f.Size, "took", time.Since(start))
	return idx, nil
}

func (n *Node) thaw(f *shardhost.Frozen) {
	if err := n.cfg.Shards.Thaw(f); err != nil {
		n.log.Error("thaw shard after a failed move", "shard", f.ShardID, "err", err)
	}
}

// settle resolves a move whose commit outcome is unknown: it asks the
// registry (through the log) until it answers, then drops or thaws.
func (n *Node) settle(f *shardhost.Frozen, to string) {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		holder, _, err := n.commitMove(ctx, f.ShardID, n.cfg.NodeID, n.cfg.NodeID)
		cancel()
		if err == nil {
			if holder == to {
				n.cfg.Shards.Drop(f, to)
			} else {
				n.thaw(f)
			}
			return
		}
		time.Sleep(backoff)
	}
}

// send streams a frozen shard to its new holder at the configured rate,
// bounded in time (a receiver that stops answering must not keep the
// shard frozen): a minute, plus the stream's time at 1 MiB/s or at the
// configured rate if lower.
func (n *Node) send(ctx context.Context, p Peer, f *shardhost.Frozen, to string, epoch uint64) error {
	rate := float64(1 << 20)
	if l := n.cluster.limiter; l != nil {
		rate = min(rate, l.perSec)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(float64(f.Size)/rate*float64(time.Second)))
	defer cancel()
	file, err := f.Open()
	if err != nil {
		return err
	}
	defer file.Close()
	var r io.Reader = file
	if l := n.cluster.limiter; l != nil {
		r = &limitedReader{ctx: ctx, r: file, l: l}
	}
	r, done := n.cluster.track(f.ShardID, n.cfg.NodeID, to, f.Size, r)
	defer done()
	return p.Handoff(ctx, api.HandoffHeader{ShardID: f.ShardID, From: n.cfg.NodeID, Epoch: epoch, Size: f.Size}, r, f.SHA256[:])
}

// commitMove changes the registry's holder of a shard through the leader,
// retrying while the global tier has no leader (bounded by ctx). from ==
// to reads the holder through the log without changing it.
func (n *Node) commitMove(ctx context.Context, shardID, from, to string) (string, uint64, error) {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		holder, idx, err := n.MoveShard(ctx, shardID, from, to, false)
		if err == nil || api.CodeOf(err) != codes.Unavailable {
			return holder, idx, err
		}
		select {
		case <-ctx.Done():
			return "", 0, err
		case <-time.After(backoff):
		}
	}
}

// MoveShard changes a shard's holder in the registry if from holds it
// (passed to the leader) and returns the holder after the call.
func (n *Node) MoveShard(ctx context.Context, shardID, from, to string, forwarded bool) (string, uint64, error) {
	g := n.cfg.Global
	if g == nil {
		return "", 0, api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	holder, idx, err := g.MoveShard(ctx, shardID, from, to)
	if errors.As(err, new(*raftglobal.NotLeaderError)) {
		type answer struct {
			holder string
			index  uint64
		}
		a, err := forwardToLeader(ctx, n, err, forwarded, "moving shard "+shardID, func(p Peer) (answer, error) {
			holder, idx, err := p.MoveShard(ctx, shardID, from, to, true)
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
	r, done := n.cluster.track(h.ShardID, h.From, n.cfg.NodeID, h.Size, r)
	defer done()
	if err := n.cfg.Shards.Receive(ctx, h.ShardID, r, h.Size, sum); err != nil {
		return err
	}
	n.fault("recv-after-store", h.ShardID)
	return nil
}

func (n *Node) fault(point, shardID string) {
	if f := n.cfg.Cluster.Fault; f != nil {
		f(point, shardID)
	}
}

// HandoffDone installs a received shard once this replica has applied the
// move's commit at index.
func (n *Node) HandoffDone(ctx context.Context, shardID string, index uint64) error {
	g := n.cfg.Global
	if g == nil {
		return api.Errorf(codes.FailedPrecondition, "this node runs no cluster metadata")
	}
	if err := g.WaitApplied(ctx, index); err != nil {
		return err
	}
	holder, _, err := g.ShardHolder(ctx, shardID)
	if err != nil {
		return err
	}
	if holder != n.cfg.NodeID {
		return api.Errorf(codes.FailedPrecondition, "shard %s: the registry names %q as its holder at index %d, not this node", shardID, holder, index)
	}
	return n.cfg.Shards.Install(shardID)
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
		slots  = make(chan struct{}, cap(n.cluster.moves))
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
				if _, err := n.moveShard(ctx, id, to, v); err != nil {
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

// Run keeps the node's ring view fresh, resolves handoffs a crash left
// unfinished, and rebalances after every epoch change, until ctx ends.
func (n *Node) Run(ctx context.Context) {
	if n.cfg.Global == nil {
		return
	}
	c := n.cluster
	go n.resolvePending(ctx)
	poll := time.NewTicker(n.cfg.Cluster.RingPoll)
	defer poll.Stop()
	every := time.NewTicker(n.cfg.Cluster.RebalanceEvery)
	defer every.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			n.refreshRing(ctx)
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

// resolvePending settles the handoffs a crash interrupted, asking the
// registry (through the log) who holds each shard.
func (n *Node) resolvePending(ctx context.Context) {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		left := 0
		for _, pm := range n.cfg.Shards.PendingMoves() {
			holder, _, err := n.commitMove(ctx, pm.ShardID, n.cfg.NodeID, n.cfg.NodeID)
			if api.CodeOf(err) == codes.NotFound {
				holder, err = "", nil
			}
			if err == nil {
				err = n.cfg.Shards.ResolveMove(pm.ShardID, pm.Role, holder)
			}
			if err != nil {
				left++
				n.log.Warn("resolve an interrupted handoff", "shard", pm.ShardID, "role", pm.Role, "err", err)
				continue
			}
			n.log.Info("resolved an interrupted handoff", "shard", pm.ShardID, "role", pm.Role, "holder", holder)
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
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
	return &api.ClusterStatus{Ring: *r, MovesInFlight: int64(n.cfg.Shards.MovesInFlight()), Moves: n.cluster.streamsUnderWay()}, nil
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

// rateLimiter spaces out bytes to a rate shared by every move.
type rateLimiter struct {
	mu     sync.Mutex
	perSec float64
	next   time.Time
}

func (l *rateLimiter) wait(ctx context.Context, n int) error {
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(float64(n) / l.perSec * float64(time.Second)))
	l.mu.Unlock()
	if d := time.Until(at); d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}

type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *rateLimiter
}

func (r *limitedReader) Read(p []byte) (int, error) {
	// Small reads keep the rate smooth (and a stream's progress visible)
	// rather than one wait per 256 KiB chunk.
	if len(p) > 16<<10 {
		p = p[:16<<10]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.wait(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
