// Package router is the gateway's view of the cluster: it keeps the ring
// (from the global tier's metadata, through any node) in memory, routes
// each shard's calls to its owner over pooled gRPC connections carrying
// the ring epoch, and retries — bounded, with back-off — when a node says
// it no longer owns the shard (NOT_OWNER: refresh the ring first) or that
// the shard is moving. A node the gossip layer reports dead fails its
// shards at once with UNAVAILABLE naming it, instead of hanging.
//
// Router implements gateway.Backend and gateway.ShardLister.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/placement"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// Gossip is the part of *membership.Membership the router reads.
type Gossip interface {
	Members() []membership.Member
	Member(id string) (membership.Member, bool)
}

// Router routes calls to the nodes that own their shards.
type Router struct {
	cfg  Config
	log  *slog.Logger
	view atomic.Pointer[view]

	refreshMu sync.Mutex

	mu    sync.Mutex
	pools map[string]*pool
	rr    atomic.Uint64

	// leader is the node-API address of the global tier's leader as the
	// nodes last named it (rpc.LeaderHeader), or "": global writes and
	// strong reads go there directly instead of through a follower.
	leader atomic.Pointer[string]

	stop    chan struct{}
	done    chan struct{}
	started atomic.Bool
}

type view struct {
	epoch uint64
	ring  *placement.Ring
	info  *api.Ring
	addrs map[string]string // node ID → address, every recorded node
}

type pool struct {
	conns []*rpc.NodeClient
	next  atomic.Uint64
}

func (p *pool) get() *rpc.NodeClient {
	return p.conns[int(p.next.Add(1)%uint64(len(p.conns)))]
}

// New returns a Router; Start begins the background ring refresh.
func New(cfg Config) (*Router, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{cfg: cfg, log: log, pools: map[string]*pool{}, stop: make(chan struct{}), done: make(chan struct{})}
	r.view.Store(&view{addrs: map[string]string{}})
	return r, nil
}

// Start refreshes the ring every RingRefresh until Close.
func (r *Router) Start() {
	r.started.Store(true)
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.cfg.RingRefresh)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := r.Refresh(ctx, 0); err != nil {
				r.log.Debug("ring refresh", "err", err)
			}
			cancel()
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Close stops the refresh and closes every connection.
func (r *Router) Close() error {
	select {
	case <-r.stop:
	default:
		close(r.stop)
		if r.started.Load() {
			select {
			case <-r.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pools {
		for _, c := range p.conns {
			c.Close()
		}
	}
	r.pools = map[string]*pool{}
	return nil
}

func (r *Router) client(addr string) (*rpc.NodeClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.pools[addr]; ok {
		return p.get(), nil
	}
	p := &pool{}
	for i := 0; i < r.cfg.ConnsPerNode; i++ {
		// The router calls nodes for its clients: a node refusing this
		// process's cluster credentials is its misconfiguration, not theirs.
		c, err := rpc.NewNodeClient(addr, append(rpc.MemberDialOptions(), r.cfg.DialOptions...)...)
		if err != nil {
			for _, c := range p.conns {
				c.Close()
			}
			return nil, err
		}
		p.conns = append(p.conns, c)
	}
	r.pools[addr] = p
	return p.get(), nil
}

// candidates are node addresses to ask for the ring or to send global-tier
// and registry calls to: alive ring members first, then seeds.
func (r *Router) candidates() []string {
	v := r.view.Load()
	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if r.cfg.Gossip != nil {
		for _, m := range r.cfg.Gossip.Members() {
			if m.Role == membership.RoleNode && m.Status == membership.Alive {
				add(m.GRPCAddr)
			}
		}
	}
	if v.info != nil {
		for _, n := range v.info.Nodes {
			if !r.dead(n.ID) {
				add(n.GRPCAddr)
			}
		}
	}
	for _, s := range r.cfg.Seeds {
		add(s)
	}
	// Spread the load, but keep the order deterministic per call site.
	if len(out) > 1 {
		k := int(r.rr.Add(1) % uint64(len(out)))
		out = append(out[k:], out[:k]...)
	}
	return out
}

// Refresh reads the ring from a node, waiting for one that has at least
// minEpoch, and returns the newest view.
func (r *Router) Refresh(ctx context.Context, minEpoch uint64) (uint64, error) {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	if v := r.view.Load(); v.epoch >= minEpoch && v.ring != nil && minEpoch > 0 {
		return v.epoch, nil
	}
	var last error = api.New(codes.Unavailable, "no node address known to read the ring from")
	for _, addr := range r.candidates() {
		c, err := r.client(addr)
		if err != nil {
			last = err
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := c.Ring(cctx, minEpoch)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if info.Epoch < r.view.Load().epoch {
			continue // a lagging replica
		}
		if err := r.install(info); err != nil {
			return 0, err
		}
		return info.Epoch, nil
	}
	return r.view.Load().epoch, last
}

func (r *Router) install(info *api.Ring) error {
	v := &view{epoch: info.Epoch, info: info, addrs: map[string]string{}}
	for _, m := range info.Members {
		v.addrs[m.ID] = m.GRPCAddr
	}
	if len(info.Nodes) > 0 {
		pm := make([]placement.Member, len(info.Nodes))
		for i, n := range info.Nodes {
			pm[i] = placement.Member{ID: placement.NodeID(n.ID), Weight: n.Weight}
			v.addrs[n.ID] = n.GRPCAddr
		}
		ring, err := placement.NewRing(pm)
		if err != nil {
			return api.Errorf(codes.Internal, "ring epoch %d: %v", info.Epoch, err)
		}
		v.ring = ring
	}
	old := r.view.Load()
	r.view.Store(v)
	if old.epoch != v.epoch {
		r.log.Info("ring epoch", "epoch", v.epoch, "nodes", len(info.Nodes))
	}
	return nil
}

// Epoch is the ring epoch the router routes with.
func (r *Router) Epoch() uint64 { return r.view.Load().epoch }

// dead reports whether the gossip layer says node id is gone.
func (r *Router) dead(id string) bool {
	st := r.gossipStatus(id)
	return st == membership.Dead || st == membership.Left
}

func (r *Router) gossipStatus(id string) membership.Status {
	if r.cfg.Gossip == nil {
		return ""
	}
	if m, ok := r.cfg.Gossip.Member(id); ok && m.Role == membership.RoleNode {
		return m.Status
	}
	return ""
}

// target is where a request goes: the owner of its shard; for the global
// tier the leader when toLeader and the nodes have named it, else any node
// (which forwards to the leader what it cannot serve).
func (r *Router) target(ctx context.Context, shardID string, toLeader bool) (id, addr string, epoch uint64, err error) {
	v := r.view.Load()
	if v.ring == nil && shardID != schema.GlobalGroup {
		if _, err := r.Refresh(ctx, 1); err != nil {
			return "", "", 0, api.Errorf(codes.Unavailable, "no ring yet (no node hosts shards): %v", err)
		}
		v = r.view.Load()
	}
	if shardID == schema.GlobalGroup {
		if l := r.leader.Load(); toLeader && l != nil {
			return "", *l, v.epoch, nil
		}
		c := r.candidates()
		if len(c) == 0 {
			return "", "", 0, api.New(codes.Unavailable, "no node is reachable")
		}
		return "", c[0], v.epoch, nil
	}
	if shardID == "" {
		shardID = schema.RootShard
	}
	if v.ring == nil {
		return "", "", 0, api.New(codes.Unavailable, "no ring yet: no node hosts shards")
	}
	id = string(v.ring.Owner(shardID))
	addr = v.addrs[id]
	if r.dead(id) {
		return id, addr, v.epoch, &api.Error{
			Code:   codes.Unavailable,
			Msg:    fmt.Sprintf("shard %s is on node %s (%s), which is down", shardID, id, addr),
			Reason: api.ReasonNodeDown,
			Meta:   map[string]string{"shard": shardID, "node": id},
		}
	}
	if addr == "" {
		return id, "", v.epoch, api.Errorf(codes.Unavailable, "node %s owns shard %s but has no recorded address", id, shardID)
	}
	return id, addr, v.epoch, nil
}

// do runs one request with routing and bounded retries. idempotent says
// whether a request that may have reached the node can be sent again.
func (r *Router) do(ctx context.Context, shardID string, idempotent bool, call func(context.Context, *rpc.NodeClient) error) error {
	return r.doTo(ctx, shardID, idempotent, false, call)
}

// doTo is do; toLeader sends a global-tier request to the leader (see
// target).
func (r *Router) doTo(ctx context.Context, shardID string, idempotent, toLeader bool, call func(context.Context, *rpc.NodeClient) error) error {
	backoff := 20 * time.Millisecond
	var err error
	var hint *rpc.LeaderHint
	if shardID == schema.GlobalGroup {
		hint = new(rpc.LeaderHint)
	}
	for attempt := 1; ; attempt++ {
		var id, addr string
		var epoch uint64
		id, addr, epoch, err = r.target(ctx, shardID, toLeader)
		local := err != nil // this gateway's own verdict, not a node's answer
		if err == nil {
			var c *rpc.NodeClient
			if c, err = r.client(addr); err == nil {
				cctx := api.WithRingEpoch(ctx, epoch)
				if hint != nil {
					*hint = rpc.LeaderHint{}
					cctx = rpc.WithLeaderHint(cctx, hint)
				}
				err = call(cctx, c)
				if hint != nil {
					r.learnLeader(addr, hint.Addr(), err)
				}
			}
		}
		if err == nil {
			return nil
		}
		reason, meta := api.ReasonOf(err)
		retry := false
		switch {
		case reason == api.ReasonNodeDown && (local || !idempotent):
			// Gossip says the owner is down: fail fast. A mutation is
			// never sent twice.
			return err
		case reason == api.ReasonNodeDown:
			// A node answered that the node it knows as the shard's
			// holder cannot be reached. The shard may have moved on (the
			// node re-reads the registry) or its holder be restarting:
			// a read is tried again, bounded.
			retry = true
		case reason == api.ReasonNotOwner:
			want, _ := strconv.ParseUint(meta["epoch"], 10, 64)
			if _, rerr := r.Refresh(ctx, want); rerr != nil {
				r.log.Debug("refresh after NOT_OWNER", "err", rerr)
			}
			retry, backoff = true, 0
		case reason == api.ReasonShardMoving:
			retry = true
		case api.CodeOf(err) == codes.Unavailable && (idempotent || unsent(err)):
			// The node may have left or restarted: re-read the ring.
			retry = true
			if _, rerr := r.Refresh(ctx, 0); rerr != nil {
				r.log.Debug("refresh after UNAVAILABLE", "err", rerr)
			}
		}
		if !retry || attempt >= r.cfg.MaxAttempts || ctx.Err() != nil {
			if api.CodeOf(err) == codes.Unavailable && reason == "" && id != "" {
				return &api.Error{Code: codes.Unavailable, Msg: fmt.Sprintf("shard %s: node %s (%s): %s", shardID, id, addr, err.Error()), Reason: api.ReasonNodeDown,
					Meta: map[string]string{"shard": shardID, "node": id}, Err: err}
			}
			return err
		}
		d := backoff
		if ra := api.RetryAfterOf(err); ra > d {
			d = ra
		}
		if d > 0 {
			d = d/2 + rand.N(d/2+1)
			select {
			case <-ctx.Done():
				return err
			case <-time.After(d):
			}
		}
		backoff = min(max(2*backoff, 20*time.Millisecond), 500*time.Millisecond)
	}
}

// learnLeader records the leader a node named in its answer to a call sent
// to addr; a leader address that failed to answer is forgotten, so the
// next global request goes to any node again (which forwards, and names
// the new leader).
func (r *Router) learnLeader(addr, named string, err error) {
	switch {
	case named != "":
		if l := r.leader.Load(); l == nil || *l != named {
			r.leader.Store(&named)
			r.log.Debug("global tier leader", "addr", named)
		}
	case err != nil && api.CodeOf(err) == codes.Unavailable:
		if l := r.leader.Load(); l != nil && *l == addr {
			r.leader.CompareAndSwap(l, nil)
		}
	}
}

// unsent reports whether the request never left the gateway (gRPC had no
// connection to carry it), so even a mutation may be sent again.
func unsent(err error) bool { return errors.Is(err, rpc.ErrNotSent) }

// Call implements gateway.Backend.
func (r *Router) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	idem := false
	if fn := r.cfg.App.Function(function); fn != nil && fn.Kind == schema.Query {
		idem = true
	}
	var res *api.Result
	err := r.doTo(ctx, shardID, idem, !idem || leaderRead(read), func(ctx context.Context, c *rpc.NodeClient) (err error) {
		res, err = c.Call(ctx, shardID, function, args, read)
		return err
	})
	return res, err
}

// Exec implements gateway.Backend.
func (r *Router) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	verb := schema.FirstKeyword(sql)
	idem := verb == "SELECT"
	isRead := verb == "SELECT" || verb == "VALUES"
	var res *api.Result
	err := r.doTo(ctx, shardID, idem, !isRead || leaderRead(read), func(ctx context.Context, c *rpc.NodeClient) (err error) {
		res, err = c.Exec(ctx, shardID, sql, params, read)
		return err
	})
	return res, err
}

// leaderRead reports whether a read of the global tier is served by the
// leader only (a strong read: the default without a bookmark).
func leaderRead(read api.ReadOptions) bool {
	return read.Consistency == api.Strong || (read.Consistency == api.ConsistencyDefault && read.Bookmark == 0)
}

// Subscribe implements gateway.Backend.
func (r *Router) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	var st api.Stream
	err := r.do(ctx, shardID, true, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		st, err = c.Subscribe(ctx, shardID, function, args, sinceSeq)
		return err
	})
	return st, err
}

// ListShards implements gateway.ShardLister from any node's replica of
// the registry.
func (r *Router) ListShards(ctx context.Context, group, after string, limit int) ([]string, string, error) {
	var ids []string
	var next string
	err := r.do(ctx, schema.GlobalGroup, true, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		ids, next, err = c.ListShards(ctx, group, "", after, limit)
		return err
	})
	return ids, next, err
}

// Status implements gateway.Backend: a node's status with the cluster's
// ring, each node's shard count and gossip state.
func (r *Router) Status(ctx context.Context) (*api.Status, error) {
	var st *api.Status
	err := r.do(ctx, schema.GlobalGroup, true, func(ctx context.Context, c *rpc.NodeClient) (err error) {
		st, err = c.Status(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if st.Cluster != nil && r.cfg.Gossip != nil {
		// This gateway's own gossip view first; the node's where it has
		// none.
		for _, list := range [][]api.RingNode{st.Cluster.Ring.Nodes, st.Cluster.Ring.Members} {
			for i := range list {
				if g := r.gossipStatus(list[i].ID); g != "" {
					list[i].Alive = string(g)
				}
			}
		}
	}
	// Every node's moves, and a probe of the nodes no gossip vouches for.
	rpc.GatherCluster(ctx, st, time.Second, func(ctx context.Context, addr string) (*api.Status, error) {
		c, err := r.client(addr)
		if err != nil {
			return nil, err
		}
		return c.Status(ctx)
	})
	return st, nil
}
