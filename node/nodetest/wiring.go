package nodetest

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc"
)

// Process is one running process of a node: what nodeproc.Start builds
// for lunora-node, minus gossip, HTTP and metrics.
type Process struct {
	Host        *shardhost.Host
	Global      *raftglobal.Store
	Node        *node.Node
	Incarnation uint64

	trans *raft.InmemTransport
	grpc  *grpc.Server // the node API for the gateway; nil without one

	alive      context.Context // ends when the process stops
	stop       context.CancelFunc
	joinCancel context.CancelFunc
	joined     chan struct{} // closed when the start-up join has returned
	wg         sync.WaitGroup
}

// lateNode is the node router for the components built before it (the
// global tier's hooks, the shard host's registry), as in nodeproc.
type lateNode struct{ n atomic.Pointer[node.Node] }

func (l *lateNode) ShardHolder(ctx context.Context, id string) (string, bool, error) {
	return l.n.Load().ShardHolder(ctx, id)
}

func (l *lateNode) RegisterShard(ctx context.Context, id string) (bool, string, error) {
	n := l.n.Load()
	return n.RegisterShard(ctx, id, n.ID(), false)
}

// build opens a node's global-tier member, shard host and node router from
// its directory — the one place a Cluster constructs them, as
// nodeproc.Start does. boot is the initial voter set (nil for a node that
// joins).
func (c *Cluster) build(n *Node, boot []raftglobal.Server, incarnation uint64) (_ *Process, err error) {
	p := &Process{Incarnation: incarnation, joined: make(chan struct{})}
	log := c.logger(n.ID)
	late := &lateNode{}

	gc := raftglobal.DefaultLocalConfig()
	gc.NodeID, gc.Dir, gc.Logger = n.ID, filepath.Join(n.Dir, "raft"), log
	_, p.trans = raft.NewInmemTransportWithTimeout(raft.ServerAddress(n.RaftAddr), 500*time.Millisecond)
	gc.Transport = p.trans
	gc.Bootstrap = boot
	gc.TargetVoters = c.cfg.TargetVoters
	gc.Schema = c.App.GroupDDL(schema.GlobalGroup)
	gc.OnLeader = func() {
		if nd := late.n.Load(); nd != nil {
			nd.PublishSelf(context.Background())
		}
	}
	gc.Probe = func(ctx context.Context, id string) bool {
		if nd := late.n.Load(); nd != nil {
			return nd.Probe(ctx, id)
		}
		return true
	}
	if c.cfg.Global != nil {
		c.cfg.Global(&gc)
	}
	if p.Global, err = raftglobal.Open(gc); err != nil {
		return nil, fmt.Errorf("global tier of %s: %w", n.ID, err)
	}
	defer func() {
		if err != nil {
			p.Global.Close()
		}
	}()

	sc := shardhost.DefaultLocalConfig()
	sc.Dir, sc.App, sc.NodeID, sc.Logger, sc.Registry = n.Dir, c.App, n.ID, log, late
	sc.MoveWait = time.Second
	sc.DeferAlarms = true // until late has its node (StartAlarms below)
	if c.cfg.Shards != nil {
		c.cfg.Shards(&sc)
	}
	if p.Host, err = shardhost.New(sc); err != nil {
		return nil, fmt.Errorf("shard host of %s: %w", n.ID, err)
	}

	p.alive, p.stop = context.WithCancel(context.Background())
	cc := c.cfg.Cluster
	if f := c.cfg.Fault; f != nil {
		cc.Fault = func(point, shardID string) {
			f(n.ID, point, shardID)
			if p.alive.Err() != nil {
				// The process was killed while the hook held it: like a
				// process stopped at this point, it never goes on.
				select {}
			}
		}
	}
	p.Node, err = node.New(node.Config{
		App:         c.App,
		Shards:      p.Host,
		Global:      p.Global,
		NodeID:      n.ID,
		GRPCAddr:    n.GRPCAddr,
		Incarnation: incarnation,
		Dial:        func(addr string) (node.Peer, error) { return c.Net.ProcessPeer(n.ID, p.alive, addr), nil },
		Cluster:     cc,
		Liveness:    c.liveness,
		Version:     "nodetest",
		Logger:      log,
	})
	if err != nil {
		p.Host.Shutdown(context.Background())
		return nil, fmt.Errorf("node %s: %w", n.ID, err)
	}
	late.n.Store(p.Node)
	p.Host.StartAlarms()
	p.Host.StartConsumers(func(ctx context.Context, shardID, function string, args map[string]any) error {
		_, err := p.Node.CallRouted(ctx, shardID, function, args)
		return err
	})
	return p, nil
}
